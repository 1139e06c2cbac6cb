SELECT count(*) FROM queue_engine.enqueue_batch('bench', array_fill('{"n": 1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'::jsonb, ARRAY[100]));
