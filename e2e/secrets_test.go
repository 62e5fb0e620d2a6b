package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

// TestSecretsNeverAtRest: a business addon on a coordinator that seals its
// Raft state, with a failover, a manual backup and a settings change on
// the way (each logs); then every log file of the run (coordinator,
// agents, audit log, each member's own log), the coordinator's whole data
// dir (raft.db, snapshots) and the /metrics of the coordinator and of
// every agent are searched for the app's password and the fleet
// credential: not found. (Member config files hold them by necessity:
// redis reads them; they are 0600 under the agent's 0700 dir.)
func TestSecretsNeverAtRest(t *testing.T) {
	keys := filepath.Join(RootOf(t).Dir, "state-keys.json")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, fmt.Appendf(nil, `{"current":"e2e","keys":{"e2e":%q}}`, base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	const coordIP = "127.0.0.240"
	hostIPs := []string{"127.0.0.241", "127.0.0.242", "127.0.0.243", "127.0.0.244"}
	f := &bizFleet{t: t, app: "secrets", agents: map[string]*Agent{}}
	f.c = StartCoordinator(t, "c1", coordIP, CoordinatorOpts{Bootstrap: true,
		ExtraArgs: []string{"--state-keys-file", keys, "--entrypoint-cidr", "127.0.26.0/24"}})
	metrics := map[string]string{}
	for i, ip := range hostIPs {
		id := fmt.Sprintf("h%d", i+1)
		metrics[id] = fmt.Sprintf("%s:%d", ip, freePorts(t, ip, 1)[0])
		f.agents[id] = StartAgent(t, f.c, id, ip, AgentOpts{Heartbeat: time.Second, ExtraArgs: []string{"--metrics-addr", metrics[id]}})
	}
	if res := f.c.CLI("addons-add", "--app", "secrets", "redis", "redis-business-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	f.id = WaitForAddonStatus(t, f.c, "secrets", api.AddonRunning, 90*time.Second).ID
	f.url = RedisURL(t, f.c, "secrets")
	opt, err := redis.ParseURL(f.url)
	if err != nil {
		t.Fatal(err)
	}
	f.opt = opt
	f.waitHealthy(60 * time.Second)
	pw := f.opt.Password
	fleet := f.fleet()
	if len(pw) < 16 || len(fleet) < 16 {
		t.Fatalf("short secrets: app %d, fleet %d characters", len(pw), len(fleet))
	}

	// Activity that logs: a failover, a settings change, a backup.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	killPrimaryProcess(t, f, "sec:")
	f.waitHealthy(60 * time.Second)
	settingsChange(t, f.c, "secrets", "--persistence", "aof")
	if res := f.c.CLI("backups-create", "--app", "secrets", "--wait"); res.Code != 0 {
		t.Fatalf("backups-create: %s", res)
	}
	if res := f.c.CLI("env", "--app", "secrets"); res.Code != 0 || !strings.Contains(res.Stdout, pw) {
		t.Fatalf("env does not print the URL with its password: %s", res)
	}
	if res := f.c.CLI("addons-info", "--app", "secrets"); strings.Contains(res.Stdout+res.Stderr, pw) {
		t.Fatalf("addons-info prints the password")
	}

	// The Raft log is sealed: the leader says so.
	if b, _ := os.ReadFile(f.c.LogPath); !bytes.Contains(b, []byte("Raft entries are sealed with the state keys")) {
		t.Fatalf("the coordinator never sealed its entries:\n%s", tail(f.c.LogPath, 20))
	}

	// /metrics, scraped now.
	scraped := map[string][]byte{}
	// The coordinator's /metrics is on its TLS peer port (no client
	// certificate needed); the agents' on plain HTTP.
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a scrape, not a trust decision
	get := func(url string, tlsPort bool) []byte {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		client := http.DefaultClient
		if tlsPort {
			client = tlsClient
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Fatalf("GET %s: %s (%d bytes)", url, resp.Status, len(b))
		}
		return b
	}
	scraped["coordinator /metrics"] = get("https://"+f.c.HTTPAddr+"/metrics", true)
	for id, addr := range metrics {
		scraped[id+" /metrics"] = get("http://"+addr+"/metrics", false)
	}

	// Files: every *.log under the run's root (coordinator, audit, agents,
	// members), and everything in the coordinator's data dir.
	var files []string
	_ = filepath.WalkDir(RootOf(t).Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".log") || strings.Contains(p, string(filepath.Separator)+"logs"+string(filepath.Separator))) {
			files = append(files, p)
		}
		return nil
	})
	_ = filepath.WalkDir(f.c.DataDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".log") {
			files = append(files, p)
		}
		return nil
	})
	var raftDB, memberLogs int
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // a socket, a file removed meanwhile
		}
		scraped[p] = b
		if filepath.Base(p) == "raft.db" {
			raftDB++
		}
		if strings.Contains(p, "members") || strings.Contains(p, f.id) {
			memberLogs++
		}
	}
	if raftDB == 0 || memberLogs == 0 {
		t.Fatalf("searched %d files: raft.db %d, member logs %d; want both", len(files), raftDB, memberLogs)
	}
	for where, b := range scraped {
		for name, s := range map[string]string{"the app's password": pw, "the fleet credential": fleet} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s found in %s", name, where)
			}
		}
	}
	t.Logf("searched %d files and %d /metrics pages for the app's password and the fleet credential", len(files), len(metrics)+1)
}
