-- workload 12: one send_event('order.paid', {"order_id": id}), id = base + (nextval(:seq) * 7919) % n: the
-- sequence's values, permuted, so that successive sends name distinct, scattered ids of base .. base + n - 1
-- (each waking the one run waiting for it), or, with a base below every id waited for, match nothing.
SELECT woken FROM queue_engine.send_event(:event::text,
         jsonb_build_object('order_id', :base::bigint + (nextval(:seq::text) * 7919) % :n::bigint));
