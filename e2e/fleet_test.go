package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fleetCredential is addon id's fleet credential (the password of the
// fleet's user on its redis members and of its sentinels), read where an
// operator on a host finds it: the masterauth line of a redis member's
// redis.conf in an agent's data dir (mode 0600). The app never sees it;
// the tests use it wherever they act as the fleet (CONFIG GET, DEBUG,
// INFO of a member, SENTINEL commands).
func fleetCredential(t testing.TB, id string, agents ...*Agent) string {
	t.Helper()
	for _, ag := range agents {
		confs, _ := filepath.Glob(filepath.Join(ag.DataDir, "members", id+"-redis-*", "redis.conf"))
		for _, p := range confs {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "masterauth "); ok {
					return v
				}
			}
		}
	}
	t.Fatalf("addon %s: no redis.conf with a fleet credential in the agents' data dirs", id)
	return ""
}

// agentList is the agents of a map (by host id).
func agentList(m map[string]*Agent) []*Agent {
	out := make([]*Agent, 0, len(m))
	for _, a := range m {
		out = append(out, a)
	}
	return out
}
