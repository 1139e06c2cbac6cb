SELECT coalesce(array_agg(run_id), '{}') AS ids FROM queue_engine.dequeue(ARRAY['bench'], :batch) \gset
SELECT queue_engine.complete_batch(:ids);
