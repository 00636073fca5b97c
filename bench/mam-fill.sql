-- bench/mam-fill.sql: fills hearth's archive (schema version 7) with :n realistic chat
-- messages for load0@bench.local, as compare.sh's mam scenario does before measuring
-- queries; run with `sqlite3 hearth.db -cmd '.parameter set :n 1000000' < mam-fill.sql`
-- while the server is stopped. Direct SQL, not XMPP: a million messages through the
-- server would take far longer than the measure. Each row is what hearth archives for a
-- received message: ~400 bytes of a Conversations-like stanza (id, origin-id, markable,
-- active chat state, a 100-byte body) from one of four contacts, one a minute.
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n)
INSERT INTO archive (localpart, with_jid, at, stanza)
SELECT 'load0',
       'load' || (1 + i % 4) || '@bench.local',
       strftime('%s', 'now') - (:n - i) * 60,
       '<message xmlns="jabber:client" type="chat" id="' || lower(hex(randomblob(8))) ||
       '" to="load0@bench.local" from="load' || (1 + i % 4) || '@bench.local/phone">' ||
       '<body>' || i || ' ' || substr(lower(hex(randomblob(60))), 1, 100 - length(i)) ||
       '</body><origin-id xmlns="urn:xmpp:sid:0" id="' || lower(hex(randomblob(8))) ||
       '"/><markable xmlns="urn:xmpp:chat-markers:0"/>' ||
       '<active xmlns="http://jabber.org/protocol/chatstates"/></message>'
  FROM n;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
