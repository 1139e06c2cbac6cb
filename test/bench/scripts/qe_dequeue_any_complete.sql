SELECT coalesce(max(run_id), 0) AS rid FROM queue_engine.dequeue(NULL, 1) \gset
\if :rid > 0
SELECT queue_engine.complete(:rid);
\endif
