package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// No test may end the test process: an unknown command panics instead.
func init() {
	stopUnknown = func(_ *slog.Logger, msg string) { panic(msg) }
}

// TestCommandTable: the types are 1..n with a name each; 1-19 are what
// the release before backups applies (level 1), every later type is above
// it (20-26, the backups: level 2), none above MaxProtocol, which has its
// feature named; the FSM applies every type of the table (none falls
// through to "not applied").
func TestCommandTable(t *testing.T) {
	names := map[string]bool{}
	last := CommandType(0)
	for ct := range commands {
		last = max(last, ct)
	}
	for ct := CommandType(1); ct <= last; ct++ {
		since, ok := ct.Since()
		want := ProtocolBase
		switch {
		case ct > CmdMemberVersion && ct <= CmdRestoreCreate:
			want = ProtocolBackups
		case ct > CmdRestoreCreate:
			want = max(since, ProtocolBackups) // added later: above level 1, whatever level
		}
		if !ok || since != want || since > MaxProtocol {
			t.Errorf("%d (%s): since %d, %v; want %d (at most MaxProtocol %d)", ct, ct, since, ok, want, MaxProtocol)
		}
		if names[ct.String()] || strings.HasPrefix(ct.String(), "command-") {
			t.Errorf("%d: name %q missing or used twice", ct, ct)
		}
		names[ct.String()] = true
	}
	if len(names) != len(commands) {
		t.Fatalf("the table has %d types, not numbered 1..%d", len(commands), last)
	}
	if protocolFeature[MaxProtocol] == "" {
		t.Fatalf("level %d has no feature named", MaxProtocol)
	}
	if _, ok := (last + 1).Since(); ok {
		t.Fatal("the type after the table is known")
	}
	f := NewFSM(testutil.Logger(t))
	for ct := range commands {
		func() {
			defer func() {
				if r := recover(); r != nil && strings.Contains(fmt.Sprint(r), "not applied") {
					t.Errorf("%s: %v", ct, r)
				}
			}()
			f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: append([]byte{byte(ct)}, `{}`...)})
		}()
	}
}

// TestUnknownCommandStopsWithAMessage: an entry of a type this release does
// not know stops the member (here: panics) with what happened and what to
// do, and applies nothing past it.
func TestUnknownCommandStopsWithAMessage(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	var msg string
	unknown := len(commands) + 1
	func() {
		defer func() { msg = fmt.Sprint(recover()) }()
		f.ApplyBatch([]*raft.Log{
			entry(t, 41, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h1"}}),
			{Index: 42, Type: raft.LogCommand, Data: []byte{byte(unknown), '{', '}'}},
			entry(t, 43, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h2"}}),
		})
	}()
	for _, want := range []string{"log entry 42", fmt.Sprintf("command type %d is unknown", unknown),
		fmt.Sprintf("protocol %d", MaxProtocol), fmt.Sprintf("command types 1-%d", len(commands)),
		"a newer cacheplane release wrote it", "Install on this host the release the other coordinators run", "data directory is kept"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	f.Read(func(s *State, _ uint64) {
		if _, ok := s.Hosts["h2"]; ok {
			t.Error("an entry after the unknown one was applied")
		}
	})
}

// TestStateLevelAndSnapshots: the state's level is the highest of the
// entries applied (a refusal does not raise it); a snapshot of a state
// that only used level-1 commands is version 1, which the release before
// backups restores, one after a backup command is version 2, which it
// refuses (its Restore: "if s.Version > snapshotVersion" with
// snapshotVersion 1) instead of dropping the backups it does not know.
func TestStateLevelAndSnapshots(t *testing.T) {
	b := newBackupFSM(t)
	snapVersion := func() int {
		t.Helper()
		snap, err := b.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		sink := &memSink{}
		if err := snap.Persist(sink); err != nil {
			t.Fatal(err)
		}
		var v struct {
			Version int `json:"version"`
		}
		if err := json.Unmarshal(sink.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		return v.Version
	}
	if v := snapVersion(); v != ProtocolBase {
		t.Fatalf("level-1 state: snapshot version %d", v)
	}
	bad := createCmd("bk-app-1-20261207", "op-b1", t0)
	bad.Backup.App = "other-app"
	if _, refused := b.apply(CmdBackupCreate, bad).(error); !refused {
		t.Fatal("a backup of another app was accepted")
	}
	if v := snapVersion(); v != ProtocolBase {
		t.Fatalf("after a refused backup command: snapshot version %d; want 1 (the state did not change)", v)
	}
	if err, _ := b.apply(CmdBackupCreate, createCmd("bk-app-1-20261207", "op-b1", t0)).(error); err != nil {
		t.Fatal(err)
	}
	if v := snapVersion(); v != ProtocolBackups {
		t.Fatalf("after a backup: snapshot version %d; want 2", v)
	}
	const previousReleaseSnapshotVersion = 1
	if !(snapVersion() > previousReleaseSnapshotVersion) {
		t.Fatal("the release before backups would restore a snapshot with backups")
	}
	assertRoundTrip(t, b.f)

	// A snapshot above this release's level is refused with what to do; one
	// written before levels were tracked (version 1 with backups) is 2.
	f := NewFSM(testutil.Logger(t))
	err := f.Restore(io.NopCloser(strings.NewReader(fmt.Sprintf(`{"version": %d}`, MaxProtocol+1))))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("protocol %d, newer than this coordinator's", MaxProtocol+1)) || !strings.Contains(err.Error(), "install on this host") {
		t.Fatalf("restore of a newer snapshot: %v", err)
	}
	if err := f.Restore(io.NopCloser(strings.NewReader(`{"version": 1, "backup_seqs": {"bk-app": 3}}`))); err != nil {
		t.Fatal(err)
	}
	f.Read(func(s *State, _ uint64) {
		if s.Version != ProtocolBackups {
			t.Fatalf("restored untracked snapshot with backups: level %d", s.Version)
		}
	})
}

// TestSettingsDuringAnOperationAsThePreviousRelease: a settings change of
// a running addon with a non-backup operation active (a member replacement) is applied, as the
// release before backups applies it (a mixed cluster must not fork on
// it); during a backup it is refused.
func TestSettingsDuringAnOperationAsThePreviousRelease(t *testing.T) {
	settings := func(b *backupFSM, opID string) any {
		s := api.DefaultSettings()
		s.CacheMode = !s.CacheMode
		return b.apply(CmdAddonSettings, AddonSettingsCmd{AddonID: "bk-app-1", Settings: s, At: t0,
			Operation: api.Operation{ID: opID, AddonID: "bk-app-1", App: "bk-app", Kind: api.OpSettingsChange, State: api.OpPending,
				Steps: operation.SettingsSteps(), CreatedAt: t0, UpdatedAt: t0}})
	}
	b := newBackupFSM(t)
	heal := api.Operation{ID: "op-replace", AddonID: "bk-app-1", App: "bk-app", Kind: api.OpReplaceMember, State: api.OpPending, CreatedAt: t0, UpdatedAt: t0}
	if err, _ := b.apply(CmdOperationCreate, OperationCreateCmd{Operation: heal}).(error); err != nil {
		t.Fatal(err)
	}
	if err, _ := settings(b, "op-s1").(error); err != nil {
		t.Fatalf("settings during a member replacement: %v; the previous release applies it", err)
	}

	b = newBackupFSM(t)
	if err, _ := b.apply(CmdBackupCreate, createCmd("bk-app-1-20261207", "op-b1", t0)).(error); err != nil {
		t.Fatal(err)
	}
	if err, _ := settings(b, "op-s2").(error); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "op-b1") {
		t.Fatalf("settings during a backup: %v", err)
	}
}

// fakeMember answers the peer API's protocol route: as the release before
// levels (404 from its catch-all route) until upgraded. It serves TLS with
// a member certificate of the cluster's CA.
type fakeMember struct {
	id       string
	upgraded atomic.Bool
	srv      *httptest.Server
}

func newFakeMember(t *testing.T, ca identity.CA, id, ip string) *fakeMember {
	t.Helper()
	m := &fakeMember{id: id}
	key, csr, err := identity.NewKey(id)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := ca.Sign(identity.Request{CSRPEM: csr, Kind: identity.KindMember, Name: id, Serial: "1f", NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := identity.Parse(key, cert, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	m.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil { // the peer API is TLS only
			writeError(w, api.ErrUnauthorized)
			return
		}
		if r.URL.Path == protocolPath && m.upgraded.Load() {
			writeJSON(w, http.StatusOK, protocolAnswer{ID: id, Protocol: MaxProtocol, Release: "next"})
			return
		}
		writeError(w, fmt.Errorf("%w: no such endpoint %s %s", api.ErrNotFound, r.Method, r.URL.Path))
	})}}
	m.srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cur.TLS}}
	m.srv.StartTLS()
	t.Cleanup(m.srv.Close)
	return m
}

// syncBuffer is a log sink shared by the controller's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// TestMixedReleasesGate runs a real coordinator (Raft, admin socket) with
// two more members in its Raft configuration (non-voters: they apply the
// log too, and the leader keeps its quorum alone) answering as the release
// before backups: the leader records its own level; backups-create is
// refused 409 with the members behind named, before any other check; the
// backups controller waits with one log line; once one member answers as
// upgraded, the message names only the other; once both are, backups are
// accepted again (here: the next refusal is about the app) and the
// controller says it resumes.
func TestMixedReleasesGate(t *testing.T) {
	c, cfg := startTestCoordinator(t, "127.0.0.101")
	store := c.Store()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := api.NewClient(cfg.Socket)

	// The leader's own record carries its level and release.
	testutil.WaitFor(t, 5*time.Second, func() error {
		st, err := admin.Cluster(ctx)
		if err != nil {
			return err
		}
		if len(st.Members) != 1 || st.Members[0].Protocol != MaxProtocol || st.Members[0].Release != ReleaseName() {
			return fmt.Errorf("members %+v", st.Members)
		}
		return nil
	})
	var own api.CoordinatorMember
	store.FSM().Read(func(s *State, _ uint64) { own = s.Coordinators["c1"] })
	if own.Protocol != MaxProtocol {
		t.Fatalf("own record %+v", own)
	}
	if err := store.Supports(CmdBackupCreate); err != nil {
		t.Fatalf("one member, this release: %v", err)
	}

	var ca *identity.CA
	store.FSM().Read(func(s *State, _ uint64) { ca = s.CA })
	if ca == nil {
		t.Fatal("the first leader made no cluster CA")
	}
	olds := []*fakeMember{newFakeMember(t, *ca, "c2", "127.0.0.102"), newFakeMember(t, *ca, "c3", "127.0.0.103")}
	for _, m := range olds {
		raftAddr := testutil.Addr(t, "127.0.0.104") // nothing listens: replication to it fails, quorum is c1
		if err := store.raft().AddNonvoter(raft.ServerID(m.id), raft.ServerAddress(raftAddr), 0, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	// In the Raft configuration, not recorded yet (a join in progress):
	// level 1.
	err := store.Supports(CmdBackupCreate)
	var mixed *MixedReleasesError
	if !errors.As(err, &mixed) || len(mixed.Behind) != 2 || !errors.Is(err, ErrMixedReleases) || !errors.Is(err, api.ErrConflict) {
		t.Fatalf("unrecorded members: %v", err)
	}
	for _, m := range olds {
		if _, err := store.Apply(ctx, CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: api.CoordinatorMember{
			ID: m.id, RaftAddr: "127.0.0.104:1", HTTPAddr: m.srv.Listener.Addr().String()}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Supports(CmdHostUpsert); err != nil {
		t.Fatalf("a level-1 command with older members: %v", err)
	}

	var logs syncBuffer
	pc := &protocolController{store: store, self: "c1", log: slog.New(slog.NewTextHandler(&logs, nil)),
		every: time.Hour, client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}} //nolint:gosec // the fake members' own certificates
	bc := &backupsController{store: store, log: slog.New(slog.NewTextHandler(&logs, nil))}
	pc.pass(ctx)

	// Refused on the admin API with the members behind, whatever the app.
	_, err = admin.BackupCreate(ctx, api.BackupCreateRequest{App: "no-such-app"})
	var re *api.RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusConflict {
		t.Fatalf("backups-create with older members: %v", err)
	}
	for _, want := range []string{"the cluster runs mixed releases: backups need protocol 2 on every coordinator: " +
		"c2 runs an older cacheplane release (protocol 1), c3 runs an older cacheplane release (protocol 1); " +
		"upgrade every coordinator to this release", "or later first, one at a time"} {
		if !strings.Contains(re.Message, want) {
			t.Errorf("message %q lacks %q", re.Message, want)
		}
	}
	if _, err := admin.Backups(ctx, "no-such-app"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("backups list with older members: %v", err)
	}
	if _, err := store.Apply(ctx, CmdBackupsForget, BackupsForgetCmd{IDs: []string{"x"}}); !errors.Is(err, ErrMixedReleases) {
		t.Fatalf("Store.Apply of a backup command with older members: %v", err)
	}
	for range 3 {
		if !bc.mixed() {
			t.Fatal("backups controller does not wait")
		}
	}

	// One upgraded: before the leader records it, the admin API asks the
	// members behind by their records and names only the other.
	olds[0].upgraded.Store(true)
	_, err = admin.BackupCreate(ctx, api.BackupCreateRequest{App: "no-such-app"})
	if msg := api.Message(err); !strings.Contains(msg, "every coordinator: c3 runs an older cacheplane release (protocol 1); upgrade") || strings.Contains(msg, "c2") {
		t.Fatalf("backups-create with c2 upgraded, not recorded yet: %q", msg)
	}
	// Recorded by the leader's next pass.
	pc.pass(ctx)
	store.FSM().Read(func(s *State, _ uint64) {
		if m := s.Coordinators["c2"]; m.Protocol != MaxProtocol || m.Release != "next" || m.HTTPAddr == "" {
			t.Fatalf("c2 recorded as %+v", m)
		}
	})
	err = store.Supports(CmdRestoreCreate)
	if msg := api.Message(err); !strings.HasPrefix(msg, "the cluster runs mixed releases: backups need protocol 2 on every coordinator: c3 has no release recorded yet (protocol 1 assumed); upgrade") {
		t.Fatalf("one member behind: %q", msg)
	}
	if lv, _ := store.ClusterProtocol(); lv != ProtocolBase {
		t.Fatalf("cluster level %d", lv)
	}

	olds[1].upgraded.Store(true)
	pc.pass(ctx)
	if err := store.Supports(CmdBackupCreate); err != nil {
		t.Fatalf("every member upgraded: %v", err)
	}
	if lv, _ := store.ClusterProtocol(); lv != MaxProtocol {
		t.Fatalf("cluster level %d", lv)
	}
	if _, err := admin.BackupCreate(ctx, api.BackupCreateRequest{App: "no-such-app"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("backups-create once every member is upgraded: %v; want the app's 404", err)
	}
	if bc.mixed() {
		t.Fatal("backups controller still waits")
	}
	if n := logs.count("periodic backups and retention wait until every coordinator is upgraded"); n != 1 {
		t.Errorf("controller logged its wait %d times; want once", n)
	}
	if n := logs.count("periodic backups and retention resume"); n != 1 {
		t.Errorf("controller logged its resume %d times; want once", n)
	}
	if logs.count("coordinator release recorded") != 2 || logs.count("every coordinator runs this protocol level") != 1 {
		t.Errorf("protocol controller log:\n%s", logs.b.String())
	}

	// A member going back to the older release is recorded back (its
	// entries would stop it anyway: see TestUnknownCommandStopsWithAMessage).
	olds[1].upgraded.Store(false)
	pc.pass(ctx)
	if err := store.Supports(CmdBackupCreate); !errors.Is(err, ErrMixedReleases) {
		t.Fatalf("after c3 went back: %v", err)
	}
}
