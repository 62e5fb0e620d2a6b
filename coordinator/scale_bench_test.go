package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/scheduler"
)

// In-process figures at fleet size, for what `make scale` cannot reach on
// one small machine (docs/benchmarks.md, "Scale"): an FSM holding
// CACHEPLANE_SCALE_BENCH_HOSTS hosts (default 10,000) and 10 starter
// addons per host, each placed (a redis and a haproxy member), built
// through FSM.Apply. Run with
//
//	go test -run '^$' -bench BenchmarkScale -benchtime 20x ./coordinator/
//
// Not run by `make test` (no -bench there).

var (
	scaleFSMOnce sync.Once
	scaleFSM     *FSM
	scaleHosts   int
)

func bigFSM(b *testing.B) *FSM {
	b.Helper()
	scaleFSMOnce.Do(func() {
		scaleHosts = 10000
		if v := os.Getenv("CACHEPLANE_SCALE_BENCH_HOSTS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				b.Fatalf("CACHEPLANE_SCALE_BENCH_HOSTS=%q", v)
			}
			scaleHosts = n
		}
		f := NewFSM(slog.New(slog.NewTextHandler(io.Discard, nil)))
		idx := uint64(0)
		apply := func(ct CommandType, payload any) {
			idx++
			data, err := Encode(ct, payload)
			if err != nil {
				b.Fatal(err)
			}
			if res, ok := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data}).(error); ok {
				b.Fatalf("entry %d (%s): %v", idx, ct, res)
			}
		}
		apply(CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()})
		for i := range scaleHosts {
			apply(CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: fmt.Sprintf("h%05d", i), Address: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255),
				MemoryMB: 65536, State: api.HostReady, Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3)}}})
		}
		for i := range scaleHosts * 10 {
			app, id := fmt.Sprintf("app-%06d", i), fmt.Sprintf("app-%06d-%04d", i, i%10000)
			c := testAddon(app, id, "")
			apply(CmdAddonCreate, c)
			h := i % scaleHosts
			op := c.Operation
			op.State = api.OpRunning
			apply(CmdAddonPlaced, AddonPlacedCmd{AddonID: id, Operation: op, Entrypoint: fmt.Sprintf("10.%d.%d.%d:%d", h>>16, (h>>8)&255, h&255, 20001+2*(i/scaleHosts)),
				Members: []api.Member{
					{ID: id + "-redis-0", Role: api.RoleRedis, HostID: fmt.Sprintf("h%05d", h), Port: 20000 + 2*(i/scaleHosts), RedisRole: "primary"},
					{ID: id + "-haproxy-0", Role: api.RoleHAProxy, HostID: fmt.Sprintf("h%05d", h), Port: 20001 + 2*(i/scaleHosts), Active: true},
				}})
			op.State = api.OpDone
			op.Steps = operation.ProvisionSteps()
			for k := range op.Steps {
				op.Steps[k].State = api.OpDone
			}
			apply(CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonRunning})
		}
		scaleFSM = f
	})
	return scaleFSM
}

// BenchmarkScaleAssignments: one host's assignments (every heartbeat and
// every watch answer builds them).
func BenchmarkScaleAssignments(b *testing.B) {
	f := bigFSM(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Read(func(s *State, _ uint64) {
			if n := len(assignmentsFor(s, fmt.Sprintf("h%05d", i%scaleHosts))); n != 20 {
				b.Fatalf("%d assignments; want 20", n)
			}
		})
	}
}

// BenchmarkScaleSchedulerView: the scheduler's view of the fleet (the
// engine's pass and addons-add's pre-flight build it).
func BenchmarkScaleSchedulerView(b *testing.B) {
	f := bigFSM(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Read(func(s *State, _ uint64) { _ = schedulerState(s) })
	}
}

// BenchmarkScalePlace: one starter placed on the large fleet, as the
// engine's pass does for each provision: counting every addon's members
// (no Usage) or from the pass's per-host usage (counted once per pass).
func BenchmarkScalePlace(b *testing.B) {
	f := bigFSM(b)
	var st scheduler.State
	f.Read(func(s *State, _ uint64) { st = schedulerState(s) })
	plan, _ := api.FindPlan(st.Plans, "redis-starter-256")
	place := func(b *testing.B, st scheduler.State) {
		for i := 0; i < b.N; i++ {
			if _, _, err := scheduler.Place(st, scheduler.Request{AddonID: fmt.Sprintf("new-%d", i), Plan: plan}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("counting", func(b *testing.B) { place(b, st) })
	b.Run("usage", func(b *testing.B) {
		u, err := scheduler.NewUsage(st)
		if err != nil {
			b.Fatal(err)
		}
		st.Usage = u
		b.ResetTimer()
		place(b, st)
	})
	b.Run("new-usage", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := scheduler.NewUsage(st); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkScaleSnapshot: Snapshot (under the FSM's lock: every apply
// waits for it) and Persist (beside the applies), with the size.
func BenchmarkScaleSnapshot(b *testing.B) {
	f := bigFSM(b)
	b.ResetTimer()
	var size int
	for i := 0; i < b.N; i++ {
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		var sink memSink
		if err := snap.Persist(&sink); err != nil {
			b.Fatal(err)
		}
		size = sink.Len()
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}

// BenchmarkScaleSnapshotCopy: the part of a snapshot every apply waits for.
func BenchmarkScaleSnapshotCopy(b *testing.B) {
	f := bigFSM(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScaleRestore: a member restoring the snapshot (a restart, or
// a follower too far behind).
func BenchmarkScaleRestore(b *testing.B) {
	f := bigFSM(b)
	snap, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		b.Fatal(err)
	}
	data := sink.Bytes()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g := NewFSM(f.log)
		if err := g.Restore(io.NopCloser(&memReader{data: data})); err != nil {
			b.Fatal(err)
		}
	}
}

type memReader struct {
	data []byte
	off  int
}

func (r *memReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

// BenchmarkScaleApplyAddonCreate: applying one addons-add entry into the
// large state (every member applies every entry).
func BenchmarkScaleApplyAddonCreate(b *testing.B) {
	f := bigFSM(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx := f.Index() + 1
		if err := benchApply(b, f, CmdAddonCreate, testAddon(fmt.Sprintf("bench-%d-%d", idx, i), fmt.Sprintf("bench-%d-%d-0000", idx, i), "")); err != nil {
			b.Fatal(err)
		}
	}
}

// benchApply applies one entry at the FSM's next index and returns the
// business failure it answered, if any.
func benchApply(b *testing.B, f *FSM, ct CommandType, cmd any) error {
	b.Helper()
	data, err := Encode(ct, cmd)
	if err != nil {
		b.Fatal(err)
	}
	res, _ := f.Apply(&raft.Log{Index: f.Index() + 1, Type: raft.LogCommand, Data: data}).(error)
	return res
}

// scaleHeartbeat is what a real agent of host h sends about its 20
// members (each running, with its figures), as `make scale`'s simulated
// agents do.
func scaleHeartbeat(b *testing.B, f *FSM, h int, now time.Time) []byte {
	b.Helper()
	hostID := fmt.Sprintf("h%05d", h)
	var as []api.Assignment
	f.Read(func(s *State, _ uint64) { as = assignmentsFor(s, hostID) })
	body, err := json.Marshal(sampleHeartbeat(hostID, as, now))
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkScaleHeartbeat: the leader's own work for one heartbeat of a
// host with 20 members (decode, the host's members, the observed state,
// the figures history), round-robin over 1,000 hosts of the large fleet;
// no TLS, HTTP/2 or relay (the relay's encoding is the followers' share).
func BenchmarkScaleHeartbeat(b *testing.B) {
	f := bigFSM(b)
	now := time.Now()
	bodies := make([][]byte, min(1000, scaleHosts))
	for i := range bodies {
		bodies[i] = scaleHeartbeat(b, f, i, now)
	}
	s := &Server{store: &Store{fsm: f}, log: f.log, now: time.Now, obs: newObserved(), stats: newStatsHistory()}
	b.ResetTimer()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest(http.MethodPost, "/v1/agent/heartbeat", bytes.NewReader(bodies[i%len(bodies)]))
		w := httptest.NewRecorder()
		if err := s.handleHeartbeat(w, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScaleHostRegister: applying a new host's registration into the
// large state (every member applies it; 10,000 hosts register at start).
func BenchmarkScaleHostRegister(b *testing.B) {
	f := bigFSM(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx := f.Index() + 1
		if err := benchApply(b, f, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: fmt.Sprintf("new-%d", idx), Address: fmt.Sprintf("10.200.%d.%d", (idx>>8)&255, idx&255),
			MemoryMB: 65536, State: api.HostReady}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScaleRelayBatch: encoding one interval's relayed figures at
// 10,000 hosts heartbeating every 5 s with 20 members each (2,000
// heartbeats, figures only): once per interval since the relay encodes
// once for every peer, before once per peer.
func BenchmarkScaleRelayBatch(b *testing.B) {
	var as []api.Assignment
	for i := range 10 {
		id := fmt.Sprintf("app-%06d-1000", i)
		as = append(as, api.Assignment{MemberID: id + "-redis-0", AddonID: id, Role: api.RoleRedis},
			api.Assignment{MemberID: id + "-haproxy-0", AddonID: id, Role: api.RoleHAProxy})
	}
	batch := make([]api.HeartbeatRequest, 2000)
	for i := range batch {
		hb := sampleHeartbeat(fmt.Sprintf("h%05d", i), as, time.Now())
		slim := api.HeartbeatRequest{HostID: hb.HostID, Stats: hb.Stats}
		for _, m := range hb.Members {
			slim.Members = append(slim.Members, api.MemberStatus{MemberID: m.MemberID, AddonID: m.AddonID, Role: m.Role, Stats: m.Stats})
		}
		batch[i] = slim
	}
	b.ResetTimer()
	var n int
	for i := 0; i < b.N; i++ {
		body, err := json.Marshal(batch)
		if err != nil {
			b.Fatal(err)
		}
		n = len(body)
	}
	b.ReportMetric(float64(n)/(1<<20), "MiB")
}

// BenchmarkScaleEngineSnapshot: the operations engine's copy of the state
// at the start of a pass, with one provision pending (the scheduler's
// view and usage then included): every admin write wakes a pass. whole:
// the snapshot; under-lock: the part every apply waits for.
func BenchmarkScaleEngineSnapshot(b *testing.B) {
	f := bigFSM(b)
	c := testAddon("pending-app", "pending-app-1000", "")
	var have bool
	f.Read(func(s *State, _ uint64) { _, have = s.Addons[c.Addon.ID] })
	if err := benchApply(b, f, CmdAddonCreate, c); err != nil && !have {
		b.Fatal(err)
	}
	e := &engine{store: &Store{fsm: f}}
	b.Run("whole", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if sn := e.snapshot(); len(sn.ops) == 0 {
				b.Fatal("no active operation in the snapshot")
			}
		}
	})
	b.Run("under-lock", func(b *testing.B) { // what every apply waits for
		for i := 0; i < b.N; i++ {
			f.Read(func(s *State, _ uint64) { _, _ = snapshotLocked(s) })
		}
	})
}

// BenchmarkScaleTopologyPass: a topology pass on the large fleet (every
// addon a starter: nothing to reconcile; what is left is finding the HA
// addons under the FSM's read lock).
func BenchmarkScaleTopologyPass(b *testing.B) {
	f := bigFSM(b)
	c := &topologyController{store: &Store{fsm: f}, obs: newObserved(), log: f.log, now: time.Now}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.pass(ctx)
	}
}
