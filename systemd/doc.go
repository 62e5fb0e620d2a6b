// Package systemd holds the unit files that run cacheplane's daemons on a
// host (cacheplane-coordinator.service, cacheplane-agent.service) and the test
// that checks them. It contains no code that runs in the daemons.
package systemd
