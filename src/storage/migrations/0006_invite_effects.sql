-- Schema version 6: what an invitation does besides allowing one registration
-- (XEP-0401 Easy User Onboarding, XEP-0379 Pre-Authenticated Roster Subscription).
--
-- `created_by` (version 5) stays the owner's information ('admin', or an account); who
-- the new account befriends is a column of its own, so that an admin's invitation made
-- from a phone (XEP-0050) does not silently add the admin as a contact.

-- 1: the new account joins the household (features/household).
ALTER TABLE invites ADD COLUMN household INTEGER NOT NULL DEFAULT 0 CHECK (household IN (0, 1));
-- The local account (a normalized localpart) the new user becomes a mutual contact of
-- (`subscription='both'` on both rosters), and whose XEP-0379 subscription requests this
-- token approves; NULL for none. Not a foreign key: an invitation outlives nothing of
-- the inviter's, and a deleted inviter is checked at use.
ALTER TABLE invites ADD COLUMN inviter TEXT;
