-- 041: Routing context of sampled packets (sFlow extended router and gateway records): next hop, BGP
-- AS path (segments flattened in order) and BGP communities (ASN << 16 | value). NULL for flows
-- from NetFlow v5/v9 and IPFIX, and for sFlow samples without those records. Added on the parent:
-- every day partition, existing or future, has them.
ALTER TABLE flowlens.flow_raw ADD COLUMN IF NOT EXISTS next_hop inet;
ALTER TABLE flowlens.flow_raw ADD COLUMN IF NOT EXISTS as_path bigint[];
ALTER TABLE flowlens.flow_raw ADD COLUMN IF NOT EXISTS communities bigint[];
