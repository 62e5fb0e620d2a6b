package dashboard

import (
	"sort"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// TokenPath is the admin socket endpoint `cacheplane ui-token` calls.
const TokenPath = "/v1/ui/token"

// TokenRequest asks for a login token.
type TokenRequest struct {
	TTL api.Duration `json:"ttl"`
}

// TokenResponse carries a login token (shown once, kept only as a hash) and
// where the dashboard listens ("" when it is off).
type TokenResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	Listen  string    `json:"listen"`
}

// Windows of the figures pages can ask for.
const (
	WindowHour = "1h"
	WindowDay  = "24h"
)

// Point is one sample of a member's or host's figures in a history: for a
// host, Memory and Swap are the used amounts.
type Point struct {
	At     time.Time
	CPU    float64
	Memory uint64
	Swap   uint64
	Disk   uint64
}

// Chart is what a page hands uPlot: shared x values (Unix seconds) and one
// line per member or host, null where it has no sample.
type Chart struct {
	X     []int64     `json:"x"`
	Lines []ChartLine `json:"lines"`
}

// ChartLine is one series of a Chart.
type ChartLine struct {
	Label  string     `json:"label"`
	Values []*float64 `json:"values"`
}

// Charts are the figures over a window.
type Charts struct {
	Window string `json:"window"`
	CPU    Chart  `json:"cpu"`
	Memory Chart  `json:"memory"`
	Swap   Chart  `json:"swap"`
	Disk   Chart  `json:"disk"`
}

// MemberNow is a member's latest figures, free memory meaning what its plan
// still allows.
type MemberNow struct {
	MemberID string             `json:"member_id"`
	Role     api.Role           `json:"role"`
	HostID   string             `json:"host_id"`
	Latest   *api.MemberFigures `json:"latest,omitempty"`
}

// AddonFigures answers GET /v1/figures/addons/{id}.
type AddonFigures struct {
	AddonID         string      `json:"addon_id"`
	App             string      `json:"app"`
	Plan            string      `json:"plan"`
	PlanMemoryBytes uint64      `json:"plan_memory_bytes"`
	Members         []MemberNow `json:"members"`
	Charts          Charts      `json:"charts"`
}

// HostsFigures answers GET /v1/figures/hosts.
type HostsFigures struct {
	Charts Charts `json:"charts"`
}

// MakeCharts aligns the series (by label) on the union of their sample
// times, each line sorted by label.
func MakeCharts(window string, series map[string][]Point) Charts {
	xs := map[int64]bool{}
	for _, pts := range series {
		for _, p := range pts {
			xs[p.At.Unix()] = true
		}
	}
	x := make([]int64, 0, len(xs))
	for t := range xs {
		x = append(x, t)
	}
	sort.Slice(x, func(i, j int) bool { return x[i] < x[j] })
	idx := make(map[int64]int, len(x))
	for i, t := range x {
		idx[t] = i
	}
	labels := make([]string, 0, len(series))
	for l := range series {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	c := Charts{Window: window}
	for _, ch := range []struct {
		chart *Chart
		pick  func(Point) float64
	}{
		{&c.CPU, func(p Point) float64 { return p.CPU }},
		{&c.Memory, func(p Point) float64 { return float64(p.Memory) }},
		{&c.Swap, func(p Point) float64 { return float64(p.Swap) }},
		{&c.Disk, func(p Point) float64 { return float64(p.Disk) }},
	} {
		ch.chart.X = x
		ch.chart.Lines = []ChartLine{}
		for _, l := range labels {
			vals := make([]*float64, len(x))
			for _, p := range series[l] {
				v := ch.pick(p)
				vals[idx[p.At.Unix()]] = &v
			}
			ch.chart.Lines = append(ch.chart.Lines, ChartLine{Label: l, Values: vals})
		}
	}
	return c
}
