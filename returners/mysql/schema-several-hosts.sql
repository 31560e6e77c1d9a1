-- For several hosts storing the same jobs (Salt multi-master: a minion returns
-- to every master, and each master has its host): one row per minion per job,
-- held by the database. Without it, two hosts delivering the same return at the
-- same moment can both find it missing and both insert it (on a Galera cluster,
-- always so when they write through different nodes). Run once, after
-- schema.sql, as an admin: mariadb salt < returners/mysql/schema-several-hosts.sql
ALTER TABLE `salt_returns` ADD UNIQUE KEY `jid_id` (`jid`, `id`);
