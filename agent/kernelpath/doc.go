// Package kernelpath owns the kernel data path of an addon's entrypoint
// (entrypoint mode "kernel"): the nftables rules that forward VIP:port to
// the primary the fleet agreed on, cap the addon's connections, and the
// conntrack entries cut when the primary changes.
//
// Each agent owns one nftables table, "cacheplane_<host id>" (family ip),
// and touches nothing else on the host. Every rule carries its owner in its
// user data ("cacheplane <addon> <kind> <key>"), so the rule set is compared
// with what the kernel holds and put right in one transaction: rules of
// addons no longer forwarded deleted, missing ones added, duplicates
// dropped; a table left without rules is deleted. Per addon:
//
//   - cap (filter, hooks output and prerouting, priority -150, before the
//     DNAT): `ip daddr VIP tcp dport P ct state new ct count over N
//     reject with tcp reset` — the N+1st connection is refused with a reset;
//   - dnat (nat, hooks output — the host's own clients — and prerouting):
//     `ip daddr VIP tcp dport P dnat to PRIMARY`;
//   - masq (nat, postrouting): a connection forwarded to a primary on
//     another host leaves with the holder's address (`masquerade`), so the
//     primary's replies come back through the holder.
//
// A change of primary replaces only the addon's dnat rules (the cap's
// counts stay) and reports it (Cut); the caller then deletes the conntrack
// entries forwarded to VIP:port whose reply does not come from the new
// primary (CutStale): the clients of the demoted node get a reset at
// their next packet and reconnect.
//
// Decisions are pure (Rules, Diff; table tests); Kernel is the netlink
// edge (kernel.go).
package kernelpath
