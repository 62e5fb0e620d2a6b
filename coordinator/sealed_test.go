package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestSealedAtRest: with the member's state keys, an addon's password is
// in neither raft.db nor a snapshot, and the member restarted on the same
// data dir (log and snapshot replayed through the keys) serves the same
// URL; without the keys file it refuses to start past the sealed state.
func TestSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.ID = "c1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Socket = filepath.Join(dir, "admin.sock")
	cfg.RaftAddr = testutil.Addr(t, "127.0.0.62")
	cfg.HTTPAddr = testutil.Addr(t, "127.0.0.62")
	cfg.Bootstrap = true
	cfg.StateKeysFile = filepath.Join(dir, "state-keys.json")
	start := func() *Coordinator {
		c, err := Start(cfg, testutil.Logger(t), testutil.Writer(t))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := start()
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Plans(ctx); return err })
	// Sealing starts once the leader's own record carries its key.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if ok, why := c.Store().sealing(); !ok {
			return fmt.Errorf("not sealing: %s", why)
		}
		return nil
	})
	peer := api.NewClient(cfg.Socket) // the agent routes, from the admin socket
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.63", MemoryMB: 2048}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "sealed", Type: "redis", Plan: "redis-starter-256"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Env(ctx, "sealed"); return err })
	url1 := redisURL(t, admin)
	pw := password(t, url1)
	if err := c.Store().raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	found := grepDir(t, cfg.DataDir, pw)
	if len(found) != 0 {
		t.Fatalf("the password is in plaintext at rest in %v", found)
	}
	if snaps := grepDir(t, filepath.Join(cfg.DataDir, "snapshots"), sealedSnapshotMagic); len(snaps) == 0 {
		t.Fatal("no sealed snapshot written")
	}

	c = start()
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Plans(ctx); return err })
	if got := redisURL(t, admin); got != url1 {
		t.Fatalf("after a restart the URL is %q, want the same as before", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Another key under the file's name: the snapshot does not open.
	data, err := NewStateKeysFile(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.StateKeysFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Start(cfg, testutil.Logger(t), testutil.Writer(t)); err == nil {
		_ = c.Close()
		t.Fatal("started with keys that cannot open its own state")
	} else if !strings.Contains(err.Error(), "state_keys_file") {
		t.Fatalf("start with other keys: %v; want the state_keys_file named", err)
	}
}

func redisURL(t *testing.T, admin *api.Client) string {
	t.Helper()
	env, err := admin.Env(context.Background(), "sealed")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range env.Vars {
		if v.Name == "REDIS_URL" {
			return v.Value
		}
	}
	t.Fatalf("no REDIS_URL in %+v", env.Vars)
	return ""
}

func password(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	pw, ok := p.User.Password()
	if !ok || len(pw) < 16 {
		t.Fatalf("URL has no real password")
	}
	return pw
}

// grepDir lists the files under dir holding s.
func grepDir(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestSealable: a state is sealed only when every coordinator it records
// applies sealed entries and holds the same current key.
func TestSealable(t *testing.T) {
	k := testStateKeys(t, time.Now())
	other := testStateKeys(t, time.Now())
	rec := func(p int, key string) api.CoordinatorMember {
		return api.CoordinatorMember{Protocol: p, StateKey: key}
	}
	for _, c := range []struct {
		name string
		k    StateKeyring
		recs []api.CoordinatorMember
		want bool
	}{
		{"all on the same key", k, []api.CoordinatorMember{rec(MaxProtocol, k.Check()), rec(MaxProtocol, k.Check())}, true},
		{"one older release", k, []api.CoordinatorMember{rec(MaxProtocol, k.Check()), rec(0, "")}, false},
		{"one with other keys", k, []api.CoordinatorMember{rec(MaxProtocol, k.Check()), rec(MaxProtocol, other.Check())}, false},
		{"one not reported yet", k, []api.CoordinatorMember{rec(MaxProtocol, k.Check()), rec(MaxProtocol, "")}, false},
		{"no keys", StateKeyring{}, []api.CoordinatorMember{rec(MaxProtocol, "")}, false},
		{"no record", k, nil, false},
	} {
		st := newState()
		for i, r := range c.recs {
			r.ID = fmt.Sprintf("c%d", i)
			st.Coordinators[r.ID] = r
		}
		if got := st.sealable(c.k); got != c.want {
			t.Errorf("%s: sealable %v, want %v", c.name, got, c.want)
		}
	}
}

// TestJoinNeedsTheSameStateKeys: a member holding other state keys (or
// none) is refused at join by a cluster that seals its log, with a
// message naming the file; with the same file it joins and the leader
// seals for both.
func TestJoinNeedsTheSameStateKeys(t *testing.T) {
	ctx := context.Background()
	keys := recoverKeys(t)
	m1 := startRecoverMember(t, "c1", "127.0.0.64", true, keys)
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := m1.admin().Plans(ctx); return err })
	other := startRecoverMember(t, "c2", "127.0.0.65", false, recoverKeys(t))
	_, err := other.admin().Join(ctx, m1.cfg.HTTPAddr, memberToken(t, m1.admin()))
	if err == nil || !strings.Contains(err.Error(), "state_keys_file") {
		t.Fatalf("join with other keys: %v; want a refusal naming state_keys_file", err)
	}
	other.close()
	same := startRecoverMember(t, "c3", "127.0.0.66", false, keys)
	if _, err := same.admin().Join(ctx, m1.cfg.HTTPAddr, memberToken(t, m1.admin())); err != nil {
		t.Fatalf("join with the same keys: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, func() error {
		if ok, why := m1.c.Store().sealing(); !ok {
			return fmt.Errorf("leader not sealing: %s", why)
		}
		return nil
	})
}
