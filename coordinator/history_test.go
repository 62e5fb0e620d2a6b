package coordinator

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// historyFSM is an FSM at ProtocolBackups with one running addon.
func historyFSM(t *testing.T) (*FSM, uint64) {
	t.Helper()
	f := NewFSM(testutil.Logger(t))
	idx := uint64(1)
	f.Apply(entry(t, idx, CmdAddonCreate, testAddon("my-app", "my-app-1111", "")))
	done := testAddon("my-app", "my-app-1111", "").Operation
	done.State = api.OpDone
	idx++
	f.Apply(entry(t, idx, CmdOperationUpdate, OperationUpdateCmd{Operation: done, AddonStatus: api.AddonRunning}))
	return f, idx
}

// settingsOps runs n settings changes to the end, one after the other.
func settingsOps(t *testing.T, f *FSM, idx uint64, n int) uint64 {
	t.Helper()
	for i := 0; i < n; i++ {
		at := t0.Add(time.Duration(i+1) * time.Minute)
		op := api.Operation{ID: fmt.Sprintf("op-s%03d", i), AddonID: "my-app-1111", App: "my-app", Kind: api.OpSettingsChange,
			State: api.OpPending, Steps: operation.SettingsSteps(), CreatedAt: at, UpdatedAt: at}
		idx++
		if res := f.Apply(entry(t, idx, CmdAddonSettings, AddonSettingsCmd{AddonID: "my-app-1111", Settings: api.DefaultSettings(), At: at, Operation: op})); res != nil {
			if err, ok := res.(error); ok {
				t.Fatalf("settings %d: %v", i, err)
			}
		}
		op.State = api.OpDone
		idx++
		if res := f.Apply(entry(t, idx, CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonRunning})); res != nil {
			t.Fatalf("finish settings %d: %v", i, res)
		}
	}
	return idx
}

func opIDs(f *FSM) map[string]bool {
	out := map[string]bool{}
	f.Read(func(s *State, _ uint64) {
		for id := range s.Operations {
			out[id] = true
		}
	})
	return out
}

func TestHistoryIsBoundedPerAddon(t *testing.T) {
	f, idx := historyFSM(t)
	f.state.Version = ProtocolBackups
	idx = settingsOps(t, f, idx, OpHistoryPerAddon+10)
	ids := opIDs(f)
	if len(ids) != OpHistoryPerAddon {
		t.Fatalf("%d operations kept; want the newest %d", len(ids), OpHistoryPerAddon)
	}
	// The newest stay, the oldest (and the provision) went.
	for i := 10; i < OpHistoryPerAddon+10; i++ {
		if id := fmt.Sprintf("op-s%03d", i); !ids[id] {
			t.Fatalf("%s (one of the newest) was dropped: %v", id, ids)
		}
	}
	if ids["op-my-app-1111"] || ids["op-s000"] {
		t.Fatalf("the oldest are kept: %v", ids)
	}
	// An active operation is never dropped, and does not count.
	op := api.Operation{ID: "op-active", AddonID: "my-app-1111", App: "my-app", Kind: api.OpSettingsChange,
		State: api.OpPending, Steps: operation.SettingsSteps(), CreatedAt: t0.Add(time.Hour), UpdatedAt: t0.Add(time.Hour)}
	idx++
	f.Apply(entry(t, idx, CmdAddonSettings, AddonSettingsCmd{AddonID: "my-app-1111", Settings: api.DefaultSettings(), At: t0.Add(time.Hour), Operation: op}))
	if ids := opIDs(f); len(ids) != OpHistoryPerAddon+1 || !ids["op-active"] {
		t.Fatalf("with an active one: %d kept (%v)", len(ids), ids["op-active"])
	}
	assertRoundTrip(t, f)

	// After a snapshot restore, the index is rebuilt and pruning goes on.
	g := restored(t, f)
	op.State = api.OpDone
	idx++
	g.Apply(entry(t, idx, CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonRunning}))
	if ids := opIDs(g); len(ids) != OpHistoryPerAddon || !ids["op-active"] || ids["op-s010"] {
		t.Fatalf("after restore: %d kept, newest %v, oldest %v", len(ids), ids["op-active"], ids["op-s010"])
	}
}

func TestHistoryKeptBelowBackupsLevel(t *testing.T) {
	// A cluster at level 1 keeps everything, as its older members do.
	f, idx := historyFSM(t)
	settingsOps(t, f, idx, OpHistoryPerAddon+5)
	if n := len(opIDs(f)); n != OpHistoryPerAddon+6 {
		t.Fatalf("level 1 kept %d operations; want all %d", n, OpHistoryPerAddon+6)
	}
}

func TestHistoryOfADeletedAddonIsItsRemoval(t *testing.T) {
	f, idx := historyFSM(t)
	f.state.Version = ProtocolBackups
	idx = settingsOps(t, f, idx, 3)
	rm := api.Operation{ID: "op-rm", AddonID: "my-app-1111", App: "my-app", Kind: api.OpRemove, State: api.OpPending,
		Steps: operation.RemoveSteps(), CreatedAt: t0.Add(time.Hour), UpdatedAt: t0.Add(time.Hour)}
	idx++
	if res := f.Apply(entry(t, idx, CmdAddonRemove, AddonRemoveCmd{AddonID: "my-app-1111", App: "my-app", At: t0.Add(time.Hour), Operation: rm})); res == nil {
		t.Fatal("remove: nil")
	}
	rm.State = api.OpDone
	idx++
	f.Apply(entry(t, idx, CmdOperationUpdate, OperationUpdateCmd{Operation: rm}))
	idx++
	f.Apply(entry(t, idx, CmdAddonDelete, AddonDeleteCmd{AddonID: "my-app-1111"}))
	if ids := opIDs(f); len(ids) != 1 || !ids["op-rm"] {
		t.Fatalf("after delete: %v; want only the removal", ids)
	}
	assertRoundTrip(t, f)
}

// restored is a fresh FSM restored from f's snapshot.
func restored(t *testing.T, f *FSM) *FSM {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	g := NewFSM(testutil.Logger(t))
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	return g
}
