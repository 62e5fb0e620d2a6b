// Package dashboard owns the coordinator's web UI: its login (one-time
// tokens issued on the admin socket by `cacheplane ui-token`, exchanged for
// an expiring session cookie), the session and CSRF checks in front of the
// admin API, the pages (fleet overview, addon, host) and their static
// assets, embedded with go:embed (uPlot vendored under assets/vendor/uplot:
// no CDN, works offline), and the chart shapes the pages draw.
//
// It does not own the admin API: the coordinator hands Handler the same
// http.Handler that serves its admin socket (same validation, same
// Raft writes), and writes the audit lines itself, naming the session
// (SessionID) instead of a uid. It keeps sessions in this process's memory:
// a token works on the coordinator that issued it, and a restart ends
// every session.
package dashboard
