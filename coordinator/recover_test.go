package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// recoverMember is one in-process coordinator of the recovery test.
type recoverMember struct {
	c   *Coordinator
	cfg Config
}

// recoverKeys is one state keys file for every member of a test cluster,
// copied into each data dir (their state_keys_file): members of one
// cluster hold the same keys.
func recoverKeys(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state-keys.json")
	if _, _, err := LoadStateKeys(path, time.Now()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func startRecoverMember(t *testing.T, id, ip string, bootstrap bool, keys []byte) *recoverMember {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.ID, cfg.Bootstrap = id, bootstrap
	cfg.DataDir, cfg.Socket = filepath.Join(dir, "data"), filepath.Join(dir, "admin.sock")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.StateKeysFile = filepath.Join(cfg.DataDir, "state-keys.json")
	if err := os.WriteFile(cfg.StateKeysFile, keys, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.RaftAddr, cfg.HTTPAddr = testutil.Addr(t, ip), testutil.Addr(t, ip)
	// Snapshots early and often: the recovery then has a snapshot and a
	// log after it to replay, as a long-lived member does.
	cfg.SnapshotInterval, cfg.SnapshotThreshold = Duration(100*time.Millisecond), 4
	c, err := Start(cfg, testutil.Logger(t), testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	m := &recoverMember{c: c, cfg: cfg}
	t.Cleanup(func() { m.close() })
	return m
}

func (m *recoverMember) close() {
	if m.c != nil {
		_ = m.c.Close()
		m.c = nil
	}
}

func (m *recoverMember) admin() *api.Client { return api.NewClient(m.cfg.Socket) }

// fleetView is what must survive the recovery: every addon and operation
// (their states move on: the leader's engine runs before and after).
func fleetView(ctx context.Context, c *api.Client) (string, error) {
	addons, err := c.Addons(ctx, "", false)
	if err != nil {
		return "", err
	}
	ops, err := c.Operations(ctx, "", "")
	if err != nil {
		return "", err
	}
	var lines []string
	for _, a := range addons {
		lines = append(lines, fmt.Sprintf("addon %s app=%s plan=%s", a.ID, a.App, a.Plan))
	}
	for _, o := range ops {
		lines = append(lines, fmt.Sprintf("operation %s addon=%s kind=%s", o.ID, o.AddonID, o.Kind))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}

// TestRecoverFromTheLastMember: three members with real Raft and bolt files,
// two closed; the survivor refuses writes ("no leader"), shows the plan,
// recovers alone with --confirm, keeps every addon and operation, takes
// writes again, and a new member (empty data dir) joins it. Before the
// loss it refused: a healthy cluster has nothing to recover.
func TestRecoverFromTheLastMember(t *testing.T) {
	ctx := context.Background()
	keys := recoverKeys(t)
	m1 := startRecoverMember(t, "c1", "127.0.0.71", true, keys)
	testutil.WaitFor(t, 10*time.Second, func() error {
		_, err := m1.admin().Plans(ctx)
		return err
	})
	m2 := startRecoverMember(t, "c2", "127.0.0.72", false, keys)
	m3 := startRecoverMember(t, "c3", "127.0.0.73", false, keys)
	for _, m := range []*recoverMember{m2, m3} {
		if _, err := m.admin().Join(ctx, m1.cfg.HTTPAddr, memberToken(t, m1.admin())); err != nil {
			t.Fatalf("join %s: %v", m.cfg.ID, err)
		}
	}
	peer := m1.admin() // the agent routes, from the admin socket
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.74", MemoryMB: 4096}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := m1.admin().AddonCreate(ctx, api.AddonCreateRequest{App: fmt.Sprintf("rec-app-%d", i), Type: "redis", Plan: "redis-starter-256"}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := fleetView(ctx, m1.admin())
	if err != nil {
		t.Fatal(err)
	}

	// The survivor is a follower: the leader and the other one go.
	members := []*recoverMember{m1, m2, m3}
	var leader *recoverMember
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, m := range members {
			if m.c.Store().IsLeader() {
				leader = m
				return nil
			}
		}
		return errors.New("no leader")
	})
	var survivor *recoverMember
	for _, m := range members {
		if m != leader {
			survivor = m
		}
	}
	// Caught up: the survivor has applied everything the leader has.
	want := leader.c.Store().FSM().Index()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := survivor.c.Store().FSM().Index(); got < want {
			return fmt.Errorf("%s applied %d of %d", survivor.cfg.ID, got, want)
		}
		return nil
	})

	// A healthy cluster: refused, and nothing changes.
	_, err = survivor.admin().Recover(ctx, api.RecoverRequest{Confirm: survivor.cfg.ID})
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "has a leader") {
		t.Fatalf("recover on a healthy cluster: %v; want a refusal naming the leader", err)
	}
	// Only on the admin socket: the peer API refuses it.
	_, err = api.NewTLSPeerClient(survivor.cfg.HTTPAddr, &tls.Config{InsecureSkipVerify: true}).Recover(ctx, api.RecoverRequest{Confirm: survivor.cfg.ID}) //nolint:gosec // the refusal is the point
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("recover over the peer API: %v; want unauthorized", err)
	}

	var dead []string
	for _, m := range members {
		if m != survivor {
			dead = append(dead, m.cfg.ID)
			m.close()
		}
	}
	slices.Sort(dead)

	// No leader: a write is refused with a clear message.
	short := survivor.admin()
	short.RetryFor = time.Second
	_, err = short.AddonCreate(ctx, api.AddonCreateRequest{App: "rec-refused", Type: "redis", Plan: "redis-starter-256"})
	if !errors.Is(err, api.ErrNoLeader) && !errors.Is(err, api.ErrNotLeader) {
		t.Fatalf("write without a majority: %v; want no leader", err)
	}
	t.Logf("write without a majority: %v", err)

	// A dropped member that answers (here: something listening on its
	// peer address) may be alive beyond a network split: refused.
	var answering *recoverMember
	for _, m := range members {
		if m != survivor {
			answering = m
			break
		}
	}
	ln, err := net.Listen("tcp", answering.cfg.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = survivor.admin().Recover(ctx, api.RecoverRequest{Confirm: survivor.cfg.ID})
	ln.Close()
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), answering.cfg.ID+" at "+answering.cfg.HTTPAddr) {
		t.Fatalf("recover while %s answers: %v; want a refusal naming it", answering.cfg.ID, err)
	}
	t.Logf("refused while a member answers: %v", err)

	// The plan: nothing done, the dropped members named.
	plan, err := survivor.admin().Recover(ctx, api.RecoverRequest{})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	var planned []string
	for _, m := range plan.Dropped {
		planned = append(planned, m.ID)
	}
	if plan.Recovered || !slices.Equal(planned, dead) || !strings.Contains(plan.Message, "--confirm "+survivor.cfg.ID) {
		t.Fatalf("plan: %+v; want not recovered, dropping %v, asking --confirm %s", plan, dead, survivor.cfg.ID)
	}
	t.Logf("plan: %s", plan.Message)
	if _, err := survivor.admin().Recover(ctx, api.RecoverRequest{Confirm: "c9"}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("recover with the wrong --confirm: %v; want invalid", err)
	}

	start := time.Now()
	res, err := survivor.admin().Recover(ctx, api.RecoverRequest{Confirm: survivor.cfg.ID})
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	t.Logf("recovered in %s: %s", time.Since(start).Round(time.Millisecond), res.Message)
	if !res.Recovered {
		t.Fatalf("recover: %+v", res)
	}
	st, err := survivor.admin().Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 || st.LeaderID != survivor.cfg.ID {
		t.Fatalf("after the recovery: %+v; want %s alone, leading", st, survivor.cfg.ID)
	}
	after, err := fleetView(ctx, survivor.admin())
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("state after the recovery:\n%s\nwant:\n%s", after, before)
	}
	survivor.c.Store().FSM().Read(func(s *State, _ uint64) {
		for _, id := range dead {
			if _, ok := s.Coordinators[id]; ok {
				t.Errorf("the record of dropped member %s is still there", id)
			}
		}
	})
	if _, err := survivor.admin().AddonCreate(ctx, api.AddonCreateRequest{App: "rec-after", Type: "redis", Plan: "redis-starter-256"}); err != nil {
		t.Fatalf("write after the recovery: %v", err)
	}
	// A second recovery is refused: the member leads.
	if _, err := survivor.admin().Recover(ctx, api.RecoverRequest{Confirm: survivor.cfg.ID}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("recover on the recovered leader: %v; want a refusal", err)
	}

	// A replacement member with an empty data dir joins.
	m4 := startRecoverMember(t, "c4", "127.0.0.75", false, keys)
	if _, err := m4.admin().Join(ctx, survivor.cfg.HTTPAddr, memberToken(t, survivor.admin())); err != nil {
		t.Fatalf("join after the recovery: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		st, err := m4.admin().Cluster(ctx)
		if err != nil {
			return err
		}
		if len(st.Members) != 2 || st.LeaderID != survivor.cfg.ID {
			return fmt.Errorf("after the join: %+v", st)
		}
		return nil
	})
	joined, err := fleetView(ctx, m4.admin())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(joined, "app=rec-after") || !strings.HasPrefix(joined, "addon") {
		t.Fatalf("state through the new member:\n%s", joined)
	}
}

// memberToken is a member join token from the admin socket of c.
func memberToken(t *testing.T, c *api.Client) string {
	t.Helper()
	tok, err := c.Token(context.Background(), api.TokenRequest{Kind: api.TokenMember, TTL: api.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}
