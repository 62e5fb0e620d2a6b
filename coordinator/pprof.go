package coordinator

import (
	"net/http"
	"net/http/pprof"
	"strings"
)

// withPprof serves Go's profiles under /debug/pprof/ beside h. Only the
// admin socket (mode 0600) is wrapped: the peer API and the dashboard
// never serve them. `curl --unix-socket <socket>
// http://x/debug/pprof/profile?seconds=20 > cpu.pprof`.
func withPprof(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			h.ServeHTTP(w, r)
			return
		}
		switch strings.TrimPrefix(r.URL.Path, "/debug/pprof/") {
		case "cmdline":
			pprof.Cmdline(w, r)
		case "profile":
			pprof.Profile(w, r)
		case "symbol":
			pprof.Symbol(w, r)
		case "trace":
			pprof.Trace(w, r)
		default:
			pprof.Index(w, r)
		}
	})
}
