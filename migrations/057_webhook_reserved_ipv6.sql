-- Webhooks refuse the IPv6 space the IETF keeps reserved.
--
-- 009's errand.webhook_refused_ranges refused IPv6's special-purpose blocks
-- (loopback, ::/96, unique local, documentation...) but not the rest of
-- what IANA's IPv6 address space registry lists as "Reserved by IETF":
-- http://[0:0:0:1::1]/ (in ::/8, outside ::/96) was accepted at INSERT and
-- dialled. IPv4's reserved 240.0.0.0/4 has been refused since 009; now
-- every IPv6 block outside 2000::/3 is too, each with its own reason, and
-- the special-purpose registry's dummy prefix 100:0:0:1::/64 (beside the
-- discard-only 100::/64, in no refused range until now) is named.
--
-- The more specific ranges keep their reasons (errand.webhook_address_problem
-- takes the longest match), and IPv4-mapped and NAT64 addresses, inside
-- ::/8, are still judged by the IPv4 address they carry before any range.
-- Only rows are added, so no function changes. jobs/webhook/guard.go's
-- refusedRanges has the same list (TestSQLAndGoRefuseTheSameAddresses).
-- An endpoint stored before with such an address is refused at delivery
-- (the Go guard), each attempt failing with the reason.
INSERT INTO errand.webhook_refused_ranges (range, reason) VALUES
    ('::/8', 'reserved by the IETF (::/8)'),
    ('100::/8', 'reserved by the IETF (100::/8)'),
    ('100:0:0:1::/64', 'the dummy prefix (100:0:0:1::/64)'),
    ('200::/7', 'reserved by the IETF (200::/7)'),
    ('400::/6', 'reserved by the IETF (400::/6)'),
    ('800::/5', 'reserved by the IETF (800::/5)'),
    ('1000::/4', 'reserved by the IETF (1000::/4)'),
    ('4000::/3', 'reserved by the IETF (4000::/3)'),
    ('6000::/3', 'reserved by the IETF (6000::/3)'),
    ('8000::/3', 'reserved by the IETF (8000::/3)'),
    ('a000::/3', 'reserved by the IETF (a000::/3)'),
    ('c000::/3', 'reserved by the IETF (c000::/3)'),
    ('e000::/4', 'reserved by the IETF (e000::/4)'),
    ('f000::/5', 'reserved by the IETF (f000::/5)'),
    ('f800::/6', 'reserved by the IETF (f800::/6)'),
    ('fe00::/9', 'reserved by the IETF (fe00::/9)');
