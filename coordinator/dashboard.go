package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/dashboard"
)

// The coordinator's side of the web dashboard (package dashboard): its
// listener, the login tokens `cacheplane ui-token` asks for on the admin
// socket, the admin API it hands the dashboard (audited with the session's
// id), and the figures over time the pages draw (statsHistory, per
// coordinator, in memory).

// dashboardRoutes adds the figures endpoints to the API routes.
func (s *Server) dashboardRoutes(mux *http.ServeMux) {
	mux.Handle("GET /v1/figures/addons/{id}", s.read(s.handleAddonFigures))
	mux.Handle("GET /v1/figures/hosts", s.read(s.handleHostFigures))
}

// planFreeBytes is what an addon's plan still allows a redis member: plan
// memory minus used, never below zero. (The container's limit is higher
// than the plan: it leaves room for fork and buffers.)
func planFreeBytes(planMB int, used uint64) uint64 {
	plan := uint64(max(planMB, 0)) << 20
	if used >= plan {
		return 0
	}
	return plan - used
}

// withPlanFree returns f with MemoryFreeBytes per the plan, for a redis
// member; other members keep their container's figure.
func withPlanFree(f *api.MemberFigures, role api.Role, plan api.Plan) *api.MemberFigures {
	if f == nil || role != api.RoleRedis || plan.MemoryMB <= 0 {
		return f
	}
	c := *f
	c.MemoryFreeBytes = planFreeBytes(plan.MemoryMB, c.MemoryBytes)
	return &c
}

// windowStart is where a figures window starts and which ring serves it.
func windowStart(window string, now time.Time) (time.Time, bool, error) {
	switch window {
	case "", dashboard.WindowHour:
		return now.Add(-time.Hour), true, nil
	case dashboard.WindowDay:
		return now.Add(-24 * time.Hour), false, nil
	}
	return time.Time{}, false, api.Invalidf("window %q: use %s or %s", window, dashboard.WindowHour, dashboard.WindowDay)
}

func (f *figSeries) window(from time.Time, fine bool) []dashboard.Point {
	if fine {
		return f.fine.since(from)
	}
	return f.coarse.since(from)
}

// memberPoints is a member's dashboard history since from.
func (h *statsHistory) memberPoints(id string, from time.Time, fine bool) []dashboard.Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.members[id]; ok {
		return s.fig.window(from, fine)
	}
	return nil
}

// hostPoints is every host's dashboard history since from (one host when
// only is set).
func (h *statsHistory) hostPoints(only string, from time.Time, fine bool) map[string][]dashboard.Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string][]dashboard.Point{}
	for id, s := range h.hostSeries {
		if only == "" || id == only {
			out[id] = s.window(from, fine)
		}
	}
	return out
}

func (s *Server) handleAddonFigures(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	window := r.URL.Query().Get("window")
	from, fine, err := windowStart(window, s.now())
	if err != nil {
		return err
	}
	var (
		a    api.Addon
		plan api.Plan
		ok   bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		if a, ok = st.Addons[id]; ok {
			plan, _ = api.FindPlan(st.Plans, a.Plan)
		}
	})
	if !ok {
		return fmt.Errorf("%w: no addon %s", api.ErrNotFound, id)
	}
	out := dashboard.AddonFigures{AddonID: a.ID, App: a.App, Plan: a.Plan, PlanMemoryBytes: uint64(max(plan.MemoryMB, 0)) << 20, Members: []dashboard.MemberNow{}}
	series := map[string][]dashboard.Point{}
	for _, m := range a.Members {
		latest := s.stats.latest(m.ID)
		out.Members = append(out.Members, dashboard.MemberNow{MemberID: m.ID, Role: m.Role, HostID: m.HostID, Latest: withPlanFree(latest, m.Role, plan)})
		if m.Role == api.RoleRedis {
			series[m.ID] = s.stats.memberPoints(m.ID, from, fine)
		}
	}
	if window == "" {
		window = dashboard.WindowHour
	}
	out.Charts = dashboard.MakeCharts(window, series)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleHostFigures(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	window, host := q.Get("window"), q.Get("host")
	if host != "" {
		if err := api.ValidateMemberID("host", host); err != nil {
			return err
		}
	}
	from, fine, err := windowStart(window, s.now())
	if err != nil {
		return err
	}
	if window == "" {
		window = dashboard.WindowHour
	}
	writeJSON(w, http.StatusOK, dashboard.HostsFigures{Charts: dashboard.MakeCharts(window, s.stats.hostPoints(host, from, fine))})
	return nil
}

// handleUIToken issues a dashboard login token: on the admin socket only
// (whoever can use it may run every admin command anyway).
func (c *Coordinator) handleUIToken(w http.ResponseWriter, r *http.Request) {
	if cred, _ := r.Context().Value(peerCredKey{}).(peerCred); !cred.Known {
		writeError(w, fmt.Errorf("%w: login tokens are issued on the coordinator's admin socket only (cacheplane ui-token on its host)", api.ErrUnauthorized))
		return
	}
	req := dashboard.TokenRequest{TTL: api.Duration(dashboard.DefaultTTL)}
	if err := api.Decode(r.Body, &req); err != nil {
		writeError(w, err)
		return
	}
	if c.cfg.DashboardListen == "" {
		writeError(w, fmt.Errorf("%w: the dashboard is off on %s (dashboard_listen is empty)", api.ErrConflict, c.cfg.ID))
		return
	}
	if c.dashSrv == nil {
		writeError(w, fmt.Errorf("%w: the dashboard of %s is not serving: %s could not be used (see its log)", api.ErrConflict, c.cfg.ID, c.cfg.DashboardListen))
		return
	}
	tok, exp, err := c.uiAuth.IssueToken(time.Duration(req.TTL))
	if err != nil {
		writeError(w, api.Invalidf("%s", err.Error()))
		return
	}
	writeJSON(w, http.StatusOK, dashboard.TokenResponse{Token: tok, Expires: exp.UTC(), Listen: c.cfg.DashboardListen})
}

// adminHandler is the admin socket's handler: the API plus the login
// token endpoint, audited.
func (c *Coordinator) adminHandler(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+dashboard.TokenPath, c.handleUIToken)
	mux.Handle("/", api)
	return c.audit.wrap(mux)
}

// startDashboard listens on dashboard_listen and serves the dashboard with
// api (the admin socket's routes) behind it. An address already in use is
// logged, not fatal: the coordinator matters more than its dashboard.
func (c *Coordinator) startDashboard(api http.Handler) {
	if c.cfg.DashboardListen == "" {
		return
	}
	ln, err := net.Listen("tcp", c.cfg.DashboardListen)
	if err != nil {
		c.log.Warn("dashboard not served: its address cannot be used (set dashboard_listen or --dashboard-listen, \"\" turns it off)",
			"dashboard_listen", c.cfg.DashboardListen, "err", err)
		return
	}
	h := dashboard.Handler(dashboard.Config{Auth: c.uiAuth, API: c.audit.wrapDashboard(api), Node: c.cfg.ID, Log: c.log.With("component", "dashboard")})
	c.dashSrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: c.baseContext}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.serve(c.dashSrv, ln, "dashboard") }()
	c.log.Info("dashboard serving", "dashboard_listen", ln.Addr().String())
}

func (c *Coordinator) closeDashboard(ctx context.Context) {
	if c.dashSrv != nil {
		if err := c.dashSrv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			c.log.Warn("dashboard shutdown", "err", err)
		}
	}
}

// wrapDashboard writes an audit line for every write from the dashboard
// and for each reveal of an app's URL, naming the session ("dashboard
// session <id>") where the admin socket names a uid.
func (a *auditLog) wrapDashboard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reveal := r.URL.Path == dashboard.RevealPath
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !reveal {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		id, _ := dashboard.SessionID(r.Context())
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Duration("took", time.Since(start)),
			slog.String("who", "dashboard session "+id), slog.String("remote", r.RemoteAddr),
		}
		if r.URL.RawQuery != "" {
			attrs = append(attrs, slog.String("query", r.URL.RawQuery))
		}
		msg := "admin write"
		if reveal {
			msg = "url revealed"
		}
		a.log.LogAttrs(r.Context(), slog.LevelInfo, msg, attrs...)
	})
}

// memoryCollector reports each redis member's memory in use and what its
// plan still allows (plan memory minus used), from the latest figures.
type memoryCollector struct {
	store      *Store
	stats      *statsHistory
	used, free *prometheus.Desc
}

func newMemoryCollector(store *Store, stats *statsHistory, id string) *memoryCollector {
	labels := []string{"addon", "app", "member"}
	return &memoryCollector{store: store, stats: stats,
		used: prometheus.NewDesc("cacheplane_addon_memory_used_bytes", "Memory a redis member uses (working set), from its agent's last report.",
			labels, prometheus.Labels{"coordinator": id}),
		free: prometheus.NewDesc("cacheplane_addon_memory_free_bytes", "What the addon's plan still allows a redis member: plan memory minus used (not the container's limit).",
			labels, prometheus.Labels{"coordinator": id}),
	}
}

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.used; ch <- c.free }

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	var addons []addonPlan
	c.store.FSM().Read(func(st *State, _ uint64) {
		for _, a := range st.Addons {
			p, _ := api.FindPlan(st.Plans, a.Plan)
			addons = append(addons, addonPlan{addon: api.Addon{ID: a.ID, App: a.App, Members: append([]api.Member(nil), a.Members...)}, plan: p})
		}
	})
	for _, m := range memoryFigures(addons, c.stats) {
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(m.used), m.addon, m.app, m.member)
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(m.free), m.addon, m.app, m.member)
	}
}

type addonPlan struct {
	addon api.Addon
	plan  api.Plan
}

type memoryRow struct {
	addon, app, member string
	used, free         uint64
}

// memoryFigures are the redis members' memory rows of /metrics, for the
// members with figures.
func memoryFigures(addons []addonPlan, stats *statsHistory) []memoryRow {
	var out []memoryRow
	for _, ap := range addons {
		for _, m := range ap.addon.Members {
			if m.Role != api.RoleRedis {
				continue
			}
			f := stats.latest(m.ID)
			if f == nil {
				continue
			}
			out = append(out, memoryRow{addon: ap.addon.ID, app: ap.addon.App, member: m.ID, used: f.MemoryBytes,
				free: planFreeBytes(ap.plan.MemoryMB, f.MemoryBytes)})
		}
	}
	return out
}

// latest is a member's latest figures (nil before its first report).
func (h *statsHistory) latest(id string) *api.MemberFigures {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.members[id]
	if !ok {
		return nil
	}
	f := s.latest
	return &f
}
