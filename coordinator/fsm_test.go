package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC)

func entry(t *testing.T, idx uint64, ct CommandType, payload any) *raft.Log {
	t.Helper()
	data, err := Encode(ct, payload)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
}

func testAddon(app, id, reqID string) AddonCreateCmd {
	return AddonCreateCmd{
		Addon: api.Addon{ID: id, App: app, Type: api.AddonType, Plan: "redis-starter-256", Engine: api.EngineRedis,
			Version: "7.0.15", Password: api.NewSecret(strings.Repeat("p", 64)), FleetPassword: api.NewSecret(strings.Repeat("f", 64)), Settings: api.DefaultSettings(),
			Status: api.AddonProvisioning, CreatedAt: t0, UpdatedAt: t0, RequestID: reqID},
		Operation: api.Operation{ID: "op-" + id, AddonID: id, App: app, Kind: api.OpProvision, State: api.OpPending,
			Steps: operation.ProvisionSteps(), CreatedAt: t0, UpdatedAt: t0},
	}
}

func TestApplyEachCommand(t *testing.T) {
	tests := []struct {
		name  string
		ct    CommandType
		cmd   any
		check func(t *testing.T, s *State, res any)
	}{
		{"coordinator upsert", CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: api.CoordinatorMember{ID: "c9", RaftAddr: "127.0.0.9:1", HTTPAddr: "127.0.0.9:2", Leader: true}},
			func(t *testing.T, s *State, _ any) {
				if m := s.Coordinators["c9"]; m.HTTPAddr != "127.0.0.9:2" || m.Leader {
					t.Fatalf("coordinator = %+v; want http addr set and leader never stored", m)
				}
			}},
		{"coordinator remove", CmdCoordinatorRemove, CoordinatorRemoveCmd{ID: "c1"},
			func(t *testing.T, s *State, _ any) {
				if _, ok := s.Coordinators["c1"]; ok {
					t.Fatal("c1 still recorded")
				}
			}},
		{"catalog set", CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans()[:2], Engines: api.DefaultEngines()[:1]},
			func(t *testing.T, s *State, _ any) {
				if len(s.Plans) != 2 || len(s.Engines) != 1 {
					t.Fatalf("catalog = %d plans, %d engines", len(s.Plans), len(s.Engines))
				}
			}},
		{"host upsert", CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h1", Address: "127.0.0.11", MemoryMB: 4096, State: api.HostReady}},
			func(t *testing.T, s *State, _ any) {
				if s.Hosts["h1"].MemoryMB != 4096 {
					t.Fatalf("host = %+v", s.Hosts["h1"])
				}
			}},
		{"addon create", CmdAddonCreate, testAddon("new-app", "new-app-1234", "r1"),
			func(t *testing.T, s *State, res any) {
				a, ok := res.(api.Addon)
				if !ok || a.ID != "new-app-1234" {
					t.Fatalf("response = %#v", res)
				}
				if s.Operations["op-new-app-1234"].State != api.OpPending {
					t.Fatal("provision operation not recorded")
				}
			}},
		{"addon remove", CmdAddonRemove, AddonRemoveCmd{AddonID: "base-app-1000", App: "base-app", At: t0,
			Operation: api.Operation{ID: "op-rm", AddonID: "base-app-1000", App: "base-app", Kind: api.OpRemove, State: api.OpPending, Steps: operation.RemoveSteps()}},
			func(t *testing.T, s *State, res any) {
				if s.Addons["base-app-1000"].Status != api.AddonRemoving {
					t.Fatalf("status = %s", s.Addons["base-app-1000"].Status)
				}
				if s.Operations["op-base-app-1000"].State != api.OpFailed {
					t.Fatal("pending provision not superseded")
				}
				if op, ok := res.(api.Operation); !ok || op.ID != "op-rm" {
					t.Fatalf("response = %#v", res)
				}
			}},
		{"operation update", CmdOperationUpdate, OperationUpdateCmd{AddonStatus: api.AddonRunning, Operation: api.Operation{
			ID: "op-base-app-1000", AddonID: "base-app-1000", App: "base-app", Kind: api.OpProvision, State: api.OpDone, UpdatedAt: t0}},
			func(t *testing.T, s *State, _ any) {
				if s.Operations["op-base-app-1000"].State != api.OpDone || s.Addons["base-app-1000"].Status != api.AddonRunning {
					t.Fatal("operation/addons status not updated")
				}
			}},
		{"addon placed", CmdAddonPlaced, AddonPlacedCmd{AddonID: "base-app-1000", Entrypoint: "127.0.0.11:20000",
			Members:   []api.Member{{ID: "base-app-1000-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 20000, RedisRole: "primary"}},
			Operation: api.Operation{ID: "op-base-app-1000", AddonID: "base-app-1000", App: "base-app", Kind: api.OpProvision, State: api.OpRunning, UpdatedAt: t0}},
			func(t *testing.T, s *State, _ any) {
				a := s.Addons["base-app-1000"]
				if a.Entrypoint != "127.0.0.11:20000" || len(a.Members) != 1 || s.Operations["op-base-app-1000"].State != api.OpRunning {
					t.Fatalf("addon after placement = %+v", a)
				}
			}},
		{"addon delete", CmdAddonDelete, AddonDeleteCmd{AddonID: "base-app-1000", At: t0},
			func(t *testing.T, s *State, _ any) {
				if _, ok := s.Addons["base-app-1000"]; ok {
					t.Fatal("addon still there")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM(testutil.Logger(t))
			f.Apply(entry(t, 1, CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: api.CoordinatorMember{ID: "c1", RaftAddr: "127.0.0.1:1"}}))
			f.Apply(entry(t, 2, CmdAddonCreate, testAddon("base-app", "base-app-1000", "")))
			res := f.Apply(entry(t, 3, tt.ct, tt.cmd))
			if err, ok := res.(error); ok {
				t.Fatalf("apply: %v", err)
			}
			if f.Index() != 3 {
				t.Fatalf("index = %d", f.Index())
			}
			f.Read(func(s *State, _ uint64) { tt.check(t, s, res) })
			assertRoundTrip(t, f)
		})
	}
}

func TestApplyBusinessErrorsChangeNothing(t *testing.T) {
	tests := []struct {
		name string
		ct   CommandType
		cmd  any
		want error
	}{
		{"second addon for app", CmdAddonCreate, testAddon("base-app", "base-app-2000", "other"), api.ErrConflict},
		{"addon id taken", CmdAddonCreate, testAddon("another-app", "base-app-1000", ""), errIDTaken},
		{"remove unknown addon", CmdAddonRemove, AddonRemoveCmd{AddonID: "nope-1", App: "base-app", Operation: api.Operation{ID: "op-x"}}, api.ErrNotFound},
		{"remove addon of other app", CmdAddonRemove, AddonRemoveCmd{AddonID: "base-app-1000", App: "other-app", Operation: api.Operation{ID: "op-x"}}, api.ErrNotFound},
		{"update unknown operation", CmdOperationUpdate, OperationUpdateCmd{Operation: api.Operation{ID: "op-nope"}}, api.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM(testutil.Logger(t))
			f.Apply(entry(t, 1, CmdAddonCreate, testAddon("base-app", "base-app-1000", "")))
			before := stateJSON(t, f)
			res := f.Apply(entry(t, 2, tt.ct, tt.cmd))
			err, ok := res.(error)
			if !ok || !errors.Is(err, tt.want) {
				t.Fatalf("response = %v; want %v", res, tt.want)
			}
			if after := stateJSON(t, f); !bytes.Equal(before, after) {
				t.Fatalf("state changed by a failed command:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestAddonCreateIsIdempotentPerRequestID(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	first := f.Apply(entry(t, 1, CmdAddonCreate, testAddon("my-app", "my-app-1111", "req-1")))
	// The same request retried after a lost answer: the leader drew a new id.
	again := f.Apply(entry(t, 2, CmdAddonCreate, testAddon("my-app", "my-app-2222", "req-1")))
	a1, a2 := first.(api.Addon), again.(api.Addon)
	if a1.ID != "my-app-1111" || a2.ID != "my-app-1111" {
		t.Fatalf("ids = %s, %s; want the first one twice", a1.ID, a2.ID)
	}
	f.Read(func(s *State, _ uint64) {
		if len(s.Addons) != 1 || len(s.Operations) != 1 {
			t.Fatalf("%d addons, %d operations; want 1 and 1", len(s.Addons), len(s.Operations))
		}
	})
}

func TestOperationUpdateRefusesFinishedOperation(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdAddonCreate, testAddon("my-app", "my-app-1111", "")))
	op := testAddon("my-app", "my-app-1111", "").Operation
	op.State = api.OpDone
	if res := f.Apply(entry(t, 2, CmdOperationUpdate, OperationUpdateCmd{Operation: op})); res != nil {
		t.Fatalf("first update: %v", res)
	}
	op.State = api.OpRunning
	if err, _ := f.Apply(entry(t, 3, CmdOperationUpdate, OperationUpdateCmd{Operation: op})).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("update of a done operation = %v; want conflict", err)
	}
}

func TestAddonSettingsOnlyWhenRunning(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdAddonCreate, testAddon("my-app", "my-app-1111", "")))
	aof := api.Settings{Persistence: api.PersistenceAOF}
	cmd := AddonSettingsCmd{AddonID: "my-app-1111", Settings: aof, At: t0,
		Operation: api.Operation{ID: "op-s", AddonID: "my-app-1111", Kind: api.OpSettingsChange, State: api.OpPending, Steps: operation.SettingsSteps()}}
	if err, _ := f.Apply(entry(t, 2, CmdAddonSettings, cmd)).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("settings change while provisioning = %v; want conflict", err)
	}
	done := testAddon("my-app", "my-app-1111", "").Operation
	done.State = api.OpDone
	f.Apply(entry(t, 3, CmdOperationUpdate, OperationUpdateCmd{Operation: done, AddonStatus: api.AddonRunning}))
	res := f.Apply(entry(t, 4, CmdAddonSettings, cmd))
	a, ok := res.(api.Addon)
	if !ok || a.Settings != aof || a.Status != api.AddonUpdating {
		t.Fatalf("settings change = %#v", res)
	}
	assertRoundTrip(t, f)
}

func TestPrimaryObservedSwapsRoles(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdAddonCreate, testAddon("ha-app", "ha-app-1111", "")))
	op := testAddon("ha-app", "ha-app-1111", "").Operation
	f.Apply(entry(t, 2, CmdAddonPlaced, AddonPlacedCmd{AddonID: "ha-app-1111", Operation: op, Members: []api.Member{
		{ID: "r0", Role: api.RoleRedis, HostID: "h1", RedisRole: "primary"},
		{ID: "r1", Role: api.RoleRedis, HostID: "h2", RedisRole: "replica"},
		{ID: "s0", Role: api.RoleSentinel, HostID: "h3"},
	}}))
	if res := f.Apply(entry(t, 3, CmdPrimaryObserved, PrimaryObservedCmd{AddonID: "ha-app-1111", PrimaryID: "r1", At: t0})); res != nil {
		t.Fatal(res)
	}
	f.Read(func(s *State, _ uint64) {
		roles := map[string]string{}
		for _, m := range s.Addons["ha-app-1111"].Members {
			roles[m.ID] = m.RedisRole
		}
		if roles["r0"] != "replica" || roles["r1"] != "primary" || roles["s0"] != "" {
			t.Fatalf("roles = %v", roles)
		}
	})
	if err, _ := f.Apply(entry(t, 4, CmdPrimaryObserved, PrimaryObservedCmd{AddonID: "ha-app-1111", PrimaryID: "s0"})).(error); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("sentinel as primary = %v; want not found", err)
	}
	assertRoundTrip(t, f)
}

func TestReplaceMemberCommands(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdAddonCreate, testAddon("ha-app", "ha-app-1111", "")))
	prov := testAddon("ha-app", "ha-app-1111", "").Operation
	f.Apply(entry(t, 2, CmdAddonPlaced, AddonPlacedCmd{AddonID: "ha-app-1111", Operation: prov, Members: []api.Member{
		{ID: "r0", Role: api.RoleRedis, HostID: "h1", RedisRole: "primary"},
		{ID: "r1", Role: api.RoleRedis, HostID: "h2", RedisRole: "replica"},
	}}))
	op := api.Operation{ID: "op-rep", AddonID: "ha-app-1111", Kind: api.OpReplaceMember, State: api.OpPending, Steps: operation.ReplaceSteps(), Target: "r1"}
	if err, _ := f.Apply(entry(t, 3, CmdOperationCreate, OperationCreateCmd{Operation: op})).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("second operation while provisioning = %v; want conflict", err)
	}
	prov.State = api.OpDone
	f.Apply(entry(t, 4, CmdOperationUpdate, OperationUpdateCmd{Operation: prov, AddonStatus: api.AddonRunning}))
	if _, isErr := f.Apply(entry(t, 5, CmdOperationCreate, OperationCreateCmd{Operation: op})).(error); isErr {
		t.Fatal("operation not created")
	}
	if res := f.Apply(entry(t, 6, CmdMemberAdded, MemberAddedCmd{AddonID: "ha-app-1111", Operation: op,
		Member: api.Member{ID: "r2", Role: api.RoleRedis, HostID: "h3", RedisRole: "replica"}})); res != nil {
		t.Fatal(res)
	}
	if err, _ := f.Apply(entry(t, 7, CmdMemberRemoved, MemberRemovedCmd{AddonID: "ha-app-1111", MemberID: "r0", Operation: op})).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("removing the primary = %v; want conflict", err)
	}
	if res := f.Apply(entry(t, 8, CmdMemberRemoved, MemberRemovedCmd{AddonID: "ha-app-1111", MemberID: "r1", Operation: op})); res != nil {
		t.Fatal(res)
	}
	f.Read(func(s *State, _ uint64) {
		var ids []string
		for _, m := range s.Addons["ha-app-1111"].Members {
			ids = append(ids, m.ID)
		}
		if strings.Join(ids, ",") != "r0,r2" {
			t.Fatalf("members = %v; want r0,r2", ids)
		}
	})
	assertRoundTrip(t, f)
}

func TestUnknownCommands(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	optional := &raft.Log{Index: 1, Type: raft.LogCommand, Data: append([]byte{byte(IgnoreUnknownFlag | 77)}, `{}`...)}
	if res := f.Apply(optional); res != nil {
		t.Fatalf("optional unknown command: %v", res)
	}
	if f.Index() != 1 {
		t.Fatal("index not advanced past an ignored command")
	}
	for _, data := range [][]byte{{77, '{', '}'}, {byte(CmdAddonCreate), 'x'}, {}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("entry %q did not panic", data)
				}
			}()
			f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data})
		}()
	}
}

func TestNonCommandEntriesOnlyAdvanceIndex(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	res := f.ApplyBatch([]*raft.Log{{Index: 5, Type: raft.LogConfiguration}, entry(t, 6, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h"}})})
	if len(res) != 2 || res[0] != nil || res[1] != nil || f.Index() != 6 {
		t.Fatalf("res=%v index=%d", res, f.Index())
	}
}

func TestChangedIsClosedByApply(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	ch := f.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any apply")
	default:
	}
	f.Apply(entry(t, 1, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h"}}))
	select {
	case <-ch:
	default:
		t.Fatal("not closed after apply")
	}
}

func TestRestoreRefusesNewerSnapshot(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	err := f.Restore(io.NopCloser(strings.NewReader(`{"version": 99}`)))
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("err = %v", err)
	}
}

// TestOlderLogStillApplies replays entries encoded by the first version of
// the command set (testdata/log-v1.json) and compares the resulting state
// with a golden file: renumbering a command or breaking a payload's decoding
// fails here. Regenerate with -update only when adding entries.
func TestOlderLogStillApplies(t *testing.T) {
	logPath := filepath.Join("testdata", "log-v1.json")
	statePath := filepath.Join("testdata", "log-v1.state.golden.json")
	if *update {
		writeV1Log(t, logPath)
	}
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var entries [][]byte
	if err := json.Unmarshal(raw, &entries); err != nil {
		t.Fatal(err)
	}
	f := NewFSM(testutil.Logger(t))
	for i, data := range entries {
		if res, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data}).(error); ok {
			t.Fatalf("entry %d: %v", i, res)
		}
	}
	got := stateJSONIndent(t, f)
	if *update {
		if err := os.WriteFile(statePath, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("state after replaying the v1 log differs from %s:\n%s", statePath, got)
	}
}

func writeV1Log(t *testing.T, path string) {
	a := testAddon("old-app", "old-app-4242", "req-old")
	rm := AddonRemoveCmd{AddonID: "gone-app-1000", App: "gone-app", At: t0,
		Operation: api.Operation{ID: "op-rm", AddonID: "gone-app-1000", App: "gone-app", Kind: api.OpRemove, State: api.OpPending, Steps: operation.RemoveSteps(), CreatedAt: t0}}
	done := rm.Operation
	done.State = api.OpDone
	cmds := []struct {
		ct CommandType
		p  any
	}{
		{CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: api.CoordinatorMember{ID: "c1", RaftAddr: "127.0.0.1:7400", HTTPAddr: "127.0.0.1:7401"}}},
		{CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: api.CoordinatorMember{ID: "c2", RaftAddr: "127.0.0.2:7400", HTTPAddr: "127.0.0.2:7401"}}},
		{CmdCoordinatorRemove, CoordinatorRemoveCmd{ID: "c2"}},
		{CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()}},
		{CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h1", Address: "127.0.0.11", MemoryMB: 8192, State: api.HostReady, Labels: map[string]string{"zone": "a"}, RegisteredAt: t0}}},
		{CmdAddonCreate, a},
		{CmdAddonCreate, testAddon("gone-app", "gone-app-1000", "")},
		{CmdAddonRemove, rm},
		{CmdOperationUpdate, OperationUpdateCmd{Operation: done}},
		{CmdAddonDelete, AddonDeleteCmd{AddonID: "gone-app-1000", At: t0}},
	}
	var entries [][]byte
	for _, c := range cmds {
		data, err := Encode(c.ct, c.p)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, data)
	}
	out, _ := json.MarshalIndent(entries, "", " ")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func stateJSON(t *testing.T, f *FSM) []byte {
	t.Helper()
	var b []byte
	f.Read(func(s *State, _ uint64) {
		var err error
		if b, err = json.Marshal(s); err != nil {
			t.Fatal(err)
		}
	})
	return b
}

func stateJSONIndent(t *testing.T, f *FSM) []byte {
	t.Helper()
	var b []byte
	f.Read(func(s *State, _ uint64) {
		var err error
		if b, err = json.MarshalIndent(s, "", "  "); err != nil {
			t.Fatal(err)
		}
	})
	return append(b, '\n')
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

// assertRoundTrip snapshots f, restores into a fresh FSM and compares.
func assertRoundTrip(t *testing.T, f *FSM) {
	t.Helper()
	g := restored(t, f)
	var a, b State
	_ = json.Unmarshal(stateJSON(t, f), &a)
	_ = json.Unmarshal(stateJSON(t, g), &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("state differs after snapshot/restore:\n%+v\n%+v", a, b)
	}
}

func TestOperationCancel(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdAddonCreate, testAddon("c-app", "c-app-1", "")))
	prov := testAddon("c-app", "c-app-1", "").Operation
	if err, _ := f.Apply(entry(t, 2, CmdOperationCancel, OperationCancelCmd{OperationID: "nope", At: t0})).(error); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("cancel of an unknown operation = %v; want not found", err)
	}
	res := f.Apply(entry(t, 3, CmdOperationCancel, OperationCancelCmd{OperationID: prov.ID, At: t0}))
	if op, ok := res.(api.Operation); !ok || !op.CancelRequested {
		t.Fatalf("cancel = %v", res)
	}
	// An update computed before the request does not clear it.
	prov.State = api.OpRunning
	f.Apply(entry(t, 4, CmdOperationUpdate, OperationUpdateCmd{Operation: prov}))
	f.Read(func(s *State, _ uint64) {
		if !s.Operations[prov.ID].CancelRequested {
			t.Fatal("cancel request lost by an update")
		}
	})
	prov.State = api.OpCancelled
	f.Apply(entry(t, 5, CmdOperationUpdate, OperationUpdateCmd{Operation: prov, AddonStatus: api.AddonError}))
	if err, _ := f.Apply(entry(t, 6, CmdOperationUpdate, OperationUpdateCmd{Operation: prov})).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("update of a cancelled operation = %v; want conflict", err)
	}
	if err, _ := f.Apply(entry(t, 7, CmdOperationCancel, OperationCancelCmd{OperationID: prov.ID, At: t0})).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("cancel of a cancelled operation = %v; want conflict", err)
	}
	f.Read(func(s *State, _ uint64) {
		if len(s.active) != 0 {
			t.Fatalf("a cancelled operation is still active: %v", s.active)
		}
	})
	assertRoundTrip(t, f)
}
