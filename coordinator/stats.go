package coordinator

import (
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/dashboard"
)

// History bounds: one point a minute for a day, per member and per host.
const (
	historyResolution = time.Minute
	historyPoints     = 24 * 60
)

// The dashboard's history (figures.go): the last hour at one point per
// fineResolution, the last day at one point a minute, per member and host.
const (
	fineResolution = 5 * time.Second
	finePoints     = int(time.Hour / fineResolution)
)

// statsHistory keeps the latest figures and a bounded per-minute history of
// every member and host, in memory (figures are high-churn observations and
// never go through the Raft log). The leader fills it from heartbeats and
// relays them to the other members (figuresRelay): every coordinator keeps
// its own copy, lost on restart.
type statsHistory struct {
	mu      sync.Mutex
	members map[string]*memberSeries
	hosts   map[string]api.HostFigures
	// hostSeries: the hosts' dashboard history.
	hostSeries map[string]*figSeries
}

type memberSeries struct {
	latest api.MemberFigures
	points []api.StatsPoint // ring, oldest first after trim
	fig    figSeries
}

// figSeries is a member's or host's dashboard history: a fine ring (the
// last hour) and a coarse one (the last day).
type figSeries struct {
	fine, coarse figRing
}

func newFigSeries() figSeries {
	return figSeries{fine: figRing{res: fineResolution, max: finePoints}, coarse: figRing{res: historyResolution, max: historyPoints}}
}

func (f *figSeries) add(p dashboard.Point) {
	f.fine.add(p)
	f.coarse.add(p)
}

// figRing keeps at most max points, one per res: a sample folds into its
// bucket's point (its last CPU, the highest memory, swap and disk).
type figRing struct {
	res time.Duration
	max int
	pts []dashboard.Point
}

func (r *figRing) add(p dashboard.Point) {
	p.At = p.At.Truncate(r.res)
	if n := len(r.pts); n > 0 && !r.pts[n-1].At.Before(p.At) {
		last := &r.pts[n-1]
		last.CPU = p.CPU
		last.Memory, last.Swap, last.Disk = max(last.Memory, p.Memory), max(last.Swap, p.Swap), max(last.Disk, p.Disk)
		return
	}
	r.pts = append(r.pts, p)
	if len(r.pts) >= 2*r.max { // amortised trim: copy once per max points
		r.pts = append(r.pts[:0:0], r.pts[len(r.pts)-r.max:]...)
	}
}

// since copies the points at or after t (at most max of them).
func (r *figRing) since(t time.Time) []dashboard.Point {
	pts := r.pts
	if len(pts) > r.max {
		pts = pts[len(pts)-r.max:]
	}
	var out []dashboard.Point
	for _, p := range pts {
		if !p.At.Before(t) {
			out = append(out, p)
		}
	}
	return out
}

func newStatsHistory() *statsHistory {
	return &statsHistory{members: map[string]*memberSeries{}, hosts: map[string]api.HostFigures{}, hostSeries: map[string]*figSeries{}}
}

// record stores a heartbeat's figures.
func (h *statsHistory) record(req api.HeartbeatRequest, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := hostFigures(req.Stats, at); ok {
		h.hosts[req.HostID] = f
		hs := h.hostSeries[req.HostID]
		if hs == nil {
			fs := newFigSeries()
			hs = &fs
			h.hostSeries[req.HostID] = hs
		}
		hs.add(dashboard.Point{At: at, CPU: f.CPUPercent, Memory: f.MemoryUsedBytes, Swap: f.SwapUsedBytes})
	}
	for _, m := range req.Members {
		f, ok := memberFigures(m.Stats, at)
		if !ok {
			continue
		}
		s := h.members[m.MemberID]
		if s == nil {
			s = &memberSeries{fig: newFigSeries()}
			h.members[m.MemberID] = s
		}
		s.latest = f
		s.fig.add(dashboard.Point{At: at, CPU: f.CPUPercent, Memory: f.MemoryBytes, Swap: f.SwapBytes, Disk: f.DiskBytes})
		s.add(api.StatsPoint{At: at.Truncate(historyResolution), CPUPercent: f.CPUPercent, MemoryBytes: f.MemoryBytes, SwapBytes: f.SwapBytes})
	}
}

// add folds a sample into the current minute (keeping the minute's highest
// memory and swap, and its last CPU figure) or starts a new minute.
func (s *memberSeries) add(p api.StatsPoint) {
	if n := len(s.points); n > 0 && s.points[n-1].At.Equal(p.At) {
		last := &s.points[n-1]
		last.CPUPercent = p.CPUPercent
		last.MemoryBytes = max(last.MemoryBytes, p.MemoryBytes)
		last.SwapBytes = max(last.SwapBytes, p.SwapBytes)
		return
	}
	s.points = append(s.points, p)
	if len(s.points) > historyPoints {
		s.points = append(s.points[:0:0], s.points[len(s.points)-historyPoints:]...)
	}
}

// member returns a member's latest figures and the points since since.
func (h *statsHistory) member(id string, since time.Time) (*api.MemberFigures, []api.StatsPoint) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.members[id]
	if !ok {
		return nil, nil
	}
	latest := s.latest
	var pts []api.StatsPoint
	for _, p := range s.points {
		if !p.At.Before(since) {
			pts = append(pts, p)
		}
	}
	return &latest, pts
}

func (h *statsHistory) host(id string) *api.HostFigures {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, ok := h.hosts[id]
	if !ok {
		return nil
	}
	return &f
}

// drop forgets members that no longer exist.
func (h *statsHistory) drop(ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		delete(h.members, id)
	}
}

// memberFigures are the figures of a member's report (false without one).
func memberFigures(r *api.MemberReport, at time.Time) (api.MemberFigures, bool) {
	if r == nil {
		return api.MemberFigures{}, false
	}
	f := api.MemberFigures{At: at}
	if !r.CollectedAt.IsZero() {
		f.At = r.CollectedAt
	}
	if r.CPU != nil {
		f.CPUPercent = r.CPU.Percent
	}
	if r.Memory != nil {
		f.MemoryBytes, f.MemoryHighestBytes, f.MemoryFreeBytes, f.MemoryLimitBytes = r.Memory.CurrentBytes, r.Memory.HighestBytes, r.Memory.FreeBytes, r.Memory.LimitBytes
	}
	if r.Swap != nil {
		f.SwapBytes, f.SwapHighestBytes, f.SwapFreeBytes = r.Swap.CurrentBytes, r.Swap.HighestBytes, r.Swap.FreeBytes
	}
	if r.Disk != nil {
		f.DiskBytes = r.Disk.TotalBytes
	}
	return f, true
}

// hostFigures are the figures of a host's report (false without one).
func hostFigures(r *api.HostReport, at time.Time) (api.HostFigures, bool) {
	if r == nil {
		return api.HostFigures{}, false
	}
	f := api.HostFigures{At: at}
	if !r.CollectedAt.IsZero() {
		f.At = r.CollectedAt
	}
	if r.CPU != nil {
		f.CPUPercent = r.CPU.Percent
	}
	if r.Memory != nil {
		f.MemoryTotalBytes, f.MemoryUsedBytes, f.MemoryFreeBytes = r.Memory.TotalBytes, r.Memory.UsedBytes, r.Memory.AvailableBytes
	}
	if r.Swap != nil {
		f.SwapTotalBytes, f.SwapUsedBytes, f.SwapFreeBytes = r.Swap.TotalBytes, r.Swap.UsedBytes, r.Swap.FreeBytes
	}
	if r.Load != nil {
		f.Load1 = r.Load.Load1
	}
	if r.Disk != nil {
		f.DiskFreeBytes = r.Disk.FreeBytes
	}
	return f, true
}
