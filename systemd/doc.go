// Package systemd holds the unit files that run cacheplane's daemons on a
// host (cacheplane-coordinator.service, cacheplane-agent.service, installed
// by the .deb packages of packaging/deb) and what checks them: a reader of
// unit files (Parse, Unit.ExecStart), Verify, which runs
// `systemd-analyze verify` on units in a throw-away root so that any finding
// fails, and SyscallSet, which expands systemd's system call groups so a
// test can check a daemon's calls against the unit's SystemCallFilter=.
//
// It contains no code that runs in the daemons; their side of systemd
// (READY=1, WATCHDOG=1) is internal/sdnotify.
package systemd
