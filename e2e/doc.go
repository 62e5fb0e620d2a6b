// Package e2e holds cacheplane's multi-process tests: they build the real
// binaries, start real coordinator processes on loopback addresses, drive
// them through the real CLI and the api package's client only, inject
// failures (kill -9, restarts, members leaving) and check invariants (no
// acknowledged write lost, none applied twice). The seeded fault suite
// (chaos_test.go; `make chaos`) adds freezes and partitions: iptables DROP
// rules between loopback addresses only, tagged and removed at the end,
// also on failure. Data dirs of a failed test
// are kept under e2e/testdata/failed-<TestName>-<time>.
package e2e
