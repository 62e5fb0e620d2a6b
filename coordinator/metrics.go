package coordinator

import (
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cacheplane/cacheplane/api"
)

// metrics are the coordinator's Prometheus figures. Gauges are read from the
// FSM and Raft at scrape time; the apply latency is observed in Store.Apply.
type metrics struct {
	reg          *prometheus.Registry
	applySeconds *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		applySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cacheplane", Subsystem: "raft", Name: "apply_duration_seconds",
			Help:    "Time from proposing a command to its application on the leader, by command.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"command"}),
	}
	m.reg.MustRegister(m.applySeconds, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// stateCollector reports Raft and FSM figures at scrape time.
type stateCollector struct {
	store *Store
	id    string

	raftState, leader, applied, lastContact, peers, hosts, addons, ops, stuck, lastBackup *prometheus.Desc
}

func newStateCollector(s *Store, id string) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("cacheplane_"+name, help, labels, prometheus.Labels{"coordinator": id})
	}
	return &stateCollector{
		store:       s,
		id:          id,
		raftState:   d("raft_state", "1 for this member's current Raft state.", "state"),
		leader:      d("raft_is_leader", "1 when this member is the leader and has caught up."),
		applied:     d("raft_applied_index", "Last log index applied to the FSM."),
		lastContact: d("raft_last_contact_seconds", "Seconds since this member last heard from the leader (0 on the leader)."),
		peers:       d("raft_peers", "Members in the Raft configuration."),
		hosts:       d("hosts", "Hosts by state.", "state"),
		addons:      d("addons", "Addons by status.", "status"),
		ops:         d("operations", "Operations by kind and state.", "kind", "state"),
		stuck:       d("operations_stuck", "Active operations that cannot make progress (a step waited too long or its action kept failing); alert on > 0.", "kind"),
		lastBackup:  d("backup_last_success_timestamp_seconds", "When the newest good backup of each addon finished (Unix time); alert when it is more than a day and a bit old.", "addon", "app"),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.raftState, c.leader, c.applied, c.lastContact, c.peers, c.hosts, c.addons, c.ops, c.stuck, c.lastBackup} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.store.raft()
	cur := r.State()
	for _, st := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if st == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.raftState, prometheus.GaugeValue, v, st.String())
	}
	leader := 0.0
	if c.store.IsLeader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(c.store.FSM().Index()))
	lc := 0.0
	if cur != raft.Leader {
		if t := r.LastContact(); !t.IsZero() {
			lc = timeSince(t).Seconds()
		}
	}
	ch <- prometheus.MustNewConstMetric(c.lastContact, prometheus.GaugeValue, lc)
	if f := r.GetConfiguration(); f.Error() == nil {
		ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(len(f.Configuration().Servers)))
	}
	hosts := map[api.HostState]int{api.HostReady: 0, api.HostDown: 0, api.HostDraining: 0}
	addons := map[api.AddonStatus]int{api.AddonProvisioning: 0, api.AddonRunning: 0, api.AddonUpdating: 0, api.AddonRemoving: 0, api.AddonError: 0}
	type kk struct {
		k api.OperationKind
		s api.OperationState
	}
	ops := map[kk]int{}
	stuck := map[api.OperationKind]int{api.OpProvision: 0, api.OpRemove: 0, api.OpSettingsChange: 0, api.OpReplaceMember: 0, api.OpPlanChange: 0, api.OpUpgrade: 0,
		api.OpBackup: 0, api.OpRestore: 0}
	type addonKey struct{ id, app string }
	last := map[addonKey]time.Time{}
	c.store.FSM().Read(func(s *State, _ uint64) {
		for _, b := range s.Backups {
			if k := (addonKey{b.AddonID, b.App}); b.Good() && b.FinishedAt.After(last[k]) {
				last[k] = b.FinishedAt
			}
		}
		for id := range s.active {
			if o := s.Operations[id]; o.Stuck != "" {
				stuck[o.Kind]++
			}
		}
		for _, h := range s.Hosts {
			hosts[h.State]++
		}
		for _, a := range s.Addons {
			addons[a.Status]++
		}
		for _, o := range s.Operations {
			ops[kk{o.Kind, o.State}]++
		}
	})
	for st, n := range hosts {
		ch <- prometheus.MustNewConstMetric(c.hosts, prometheus.GaugeValue, float64(n), string(st))
	}
	for st, n := range addons {
		ch <- prometheus.MustNewConstMetric(c.addons, prometheus.GaugeValue, float64(n), string(st))
	}
	for k, n := range ops {
		ch <- prometheus.MustNewConstMetric(c.ops, prometheus.GaugeValue, float64(n), string(k.k), string(k.s))
	}
	for k, n := range stuck {
		ch <- prometheus.MustNewConstMetric(c.stuck, prometheus.GaugeValue, float64(n), string(k))
	}
	for k, t := range last {
		ch <- prometheus.MustNewConstMetric(c.lastBackup, prometheus.GaugeValue, float64(t.UnixNano())/1e9, k.id, k.app)
	}
}

// backupMetrics count what the leader's backups did: attempts done and
// failed (per coordinator process: they count while it leads), and the
// due backups waiting (why is in the debug log).
type backupMetrics struct {
	taken, failed prometheus.Counter
	waiting       prometheus.Gauge
}

func newBackupMetrics(reg prometheus.Registerer) *backupMetrics {
	m := &backupMetrics{
		taken: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cacheplane", Name: "backups_taken_total",
			Help: "Backups (periodic and manual) that finished done while this coordinator led."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cacheplane", Name: "backups_failed_total",
			Help: "Backup attempts that failed (or were cancelled) while this coordinator led; a periodic one is retried that day."}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "cacheplane", Name: "backups_waiting",
			Help: "Periodic backups that are due but cannot start (busy addon, no healthy member to dump, host at its limit), at the last check of the leader."}),
	}
	if reg != nil {
		reg.MustRegister(m.taken, m.failed, m.waiting)
	}
	return m
}

func (m *backupMetrics) setWaiting(n int) {
	if m != nil {
		m.waiting.Set(float64(n))
	}
}

// finished counts a backup operation that ended.
func (m *backupMetrics) finished(op api.Operation) {
	if m == nil || op.Kind != api.OpBackup {
		return
	}
	switch op.State {
	case api.OpDone:
		m.taken.Inc()
	case api.OpFailed, api.OpCancelled:
		m.failed.Inc()
	}
}
