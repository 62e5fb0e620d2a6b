package runtime

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
)

func TestStatsFrom(t *testing.T) {
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	const mib = 1 << 20
	tests := []struct {
		name string
		in   any
		want Stats
	}{
		{"v1 limited, no swap", &v1stats.Metrics{
			CPU: &v1stats.CPUStat{Usage: &v1stats.CPUUsage{Total: 123}},
			Memory: &v1stats.MemoryStat{TotalRSS: 2 * mib,
				Usage: &v1stats.MemoryEntry{Usage: 3 * mib, Max: 4 * mib, Limit: 256 * mib},
				Swap:  &v1stats.MemoryEntry{Usage: 3 * mib, Limit: 256 * mib}},
		}, Stats{CPUUsageNanos: 123, MemoryBytes: 3 * mib, MemoryMaxBytes: 4 * mib, RSSBytes: 2 * mib,
			MemoryLimitBytes: 256 * mib, SwapLimitBytes: 256 * mib, At: at}},
		{"v1 unlimited, swapping", &v1stats.Metrics{
			Memory: &v1stats.MemoryStat{
				Usage: &v1stats.MemoryEntry{Usage: 3 * mib, Limit: 9223372036854771712},
				Swap:  &v1stats.MemoryEntry{Usage: 5 * mib, Limit: 9223372036854771712}},
		}, Stats{MemoryBytes: 3 * mib, SwapBytes: 2 * mib, At: at}},
		{"v2 limited, no swap", &v2stats.Metrics{
			CPU:    &v2stats.CPUStat{UsageUsec: 7},
			Memory: &v2stats.MemoryStat{Usage: 3 * mib, Anon: 2 * mib, UsageLimit: 256 * mib, SwapLimit: 0},
		}, Stats{CPUUsageNanos: 7000, MemoryBytes: 3 * mib, RSSBytes: 2 * mib, MemoryLimitBytes: 256 * mib,
			SwapLimitBytes: 256 * mib, At: at}},
		{"v2 unlimited", &v2stats.Metrics{
			Memory: &v2stats.MemoryStat{Usage: 3 * mib, UsageLimit: math.MaxUint64, SwapUsage: mib, SwapLimit: math.MaxUint64},
		}, Stats{MemoryBytes: 3 * mib, SwapBytes: mib, At: at}},
		{"empty v1", &v1stats.Metrics{}, Stats{At: at}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statsFrom(tc.in, at)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if _, err := statsFrom("nope", at); err == nil {
		t.Fatal("unknown metrics type accepted")
	}
}

func TestLastLines(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	long := strings.Repeat("x", tailBytes) + "\nlast-but-one\nlast\n"
	tests := []struct {
		name string
		path string
		n    int
		want []string
	}{
		{"missing file", filepath.Join(dir, "none.log"), 5, nil},
		{"empty", write("empty.log", ""), 5, nil},
		{"fewer lines than n", write("few.log", "a\nb\n"), 5, []string{"a", "b"}},
		{"last n", write("many.log", "a\nb\nc\nd"), 2, []string{"c", "d"}},
		{"crlf", write("crlf.log", "a\r\nb\r\n"), 5, []string{"a", "b"}},
		{"n zero", write("zero.log", "a\n"), 0, nil},
		{"tail of a big file", write("big.log", long), 5, []string{"last-but-one", "last"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lastLines(tc.path, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Spec{ID: "a1-redis-0", Image: "img", Args: []string{"/bin/x"}, DataDir: "/data/a1"}
	if err := validate(ok); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]Spec{
		"empty id":      {Image: "img", Args: []string{"x"}},
		"slash in id":   {ID: "a/b", Image: "img", Args: []string{"x"}},
		"long id":       {ID: strings.Repeat("a", 77), Image: "img", Args: []string{"x"}},
		"relative data": {ID: "a", Image: "img", Args: []string{"x"}, DataDir: "data"},
		"negative mem":  {ID: "a", Image: "img", Args: []string{"x"}, MemoryLimitBytes: -1},
		"relative mount": {ID: "a", Image: "img", Args: []string{"x"},
			ExtraMounts: []Mount{{Source: "etc", Destination: "/etc/x"}}},
	} {
		if err := validate(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
