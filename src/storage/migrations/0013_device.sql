-- Schema version 13: device accounts (features/device, issue 21) — sensors that report
-- through presence — and the last presence each one sent, kept for when it sleeps.

-- The accounts that are devices (`hearth device add`): a restricted role (no federation,
-- messages and subscriptions only inside the household, a presence rate). One row per
-- device; deleted with the account.
CREATE TABLE devices (
    localpart TEXT PRIMARY KEY NOT NULL REFERENCES accounts (localpart) ON DELETE CASCADE,
    -- Unix seconds, for the owner's information (`hearth device list`).
    added_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A device's last broadcast available presence: its `<status/>` text and its
-- `<telemetry xmlns='urn:hearth:telemetry:0'/>` element (serialized standalone, '' when
-- it sent none), and when it was sent (Unix seconds). Served to probes and at its
-- subscribers' logins while it is offline (RFC 6121 §4.3.2, XEP-0203 `<delay/>`).
-- Written at most once per presence interval (`[devices]`): an SD card is not worn by a
-- sensor that reports often. Small and bounded (one row per device, the telemetry
-- limits), so not counted in the account's stored bytes.
CREATE TABLE device_presence (
    localpart TEXT PRIMARY KEY NOT NULL REFERENCES devices (localpart) ON DELETE CASCADE,
    sent_at   INTEGER NOT NULL,
    status    TEXT NOT NULL DEFAULT '',
    telemetry TEXT NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;
