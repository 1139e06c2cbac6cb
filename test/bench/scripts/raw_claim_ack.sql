WITH c AS (
  UPDATE raw_jobs SET locked_at = now()
   WHERE id = ANY (ARRAY(SELECT id FROM raw_jobs WHERE locked_at IS NULL
                          ORDER BY run_at, id LIMIT :batch FOR UPDATE SKIP LOCKED))
  RETURNING id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM c \gset
DELETE FROM raw_jobs WHERE id = ANY (:ids);
