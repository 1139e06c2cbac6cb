SELECT queue_engine.enqueue('bench', '{"n": 1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}');
SELECT coalesce(max(run_id), 0) AS rid FROM queue_engine.dequeue(ARRAY['bench'], 1) \gset
\if :rid > 0
SELECT queue_engine.complete(:rid);
\endif
