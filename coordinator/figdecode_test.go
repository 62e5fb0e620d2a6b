package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// sampleHeartbeat is a heartbeat as an agent sends it: each assigned
// member running with a full figures report, and the host's figures.
func sampleHeartbeat(hostID string, as []api.Assignment, now time.Time) api.HeartbeatRequest {
	started := now.Add(-time.Hour)
	req := api.HeartbeatRequest{HostID: hostID, Members: []api.MemberStatus{}, Stats: &api.HostReport{CollectedAt: now,
		CPU:    &api.HostCPU{Percent: 12.5, CPUs: 32},
		Memory: &api.HostMemory{TotalBytes: 64 << 30, UsedBytes: 20 << 30, FreeBytes: 30 << 30, AvailableBytes: 40 << 30},
		Swap:   &api.HostSwap{TotalBytes: 4 << 30, FreeBytes: 4 << 30},
		Load:   &api.HostLoad{Load1: 1.5, Load5: 1.2, Load15: 1.1},
		Disk:   &api.HostDisk{Path: "/var/lib/cacheplane", TotalBytes: 500 << 30, UsedBytes: 100 << 30, FreeBytes: 400 << 30}}}
	for _, m := range as {
		ms := api.MemberStatus{MemberID: m.MemberID, AddonID: m.AddonID, Role: m.Role, State: api.MemberRunning,
			Pid: 4242, StartedAt: started, SpecHash: "0123456789abcdef",
			Stats: &api.MemberReport{CollectedAt: now, CgroupPath: "/sys/fs/cgroup/cacheplane/" + m.MemberID, CgroupVersion: 2,
				PID: 4242, StartedAt: started,
				CPU:    &api.MemberCPU{UsageNanos: uint64(time.Hour), Percent: 0.7},
				Memory: &api.MemberMemory{CurrentBytes: 30 << 20, UsageBytes: 32 << 20, HighestBytes: 40 << 20, HighestSource: "kernel", LimitBytes: 256 << 20, FreeBytes: 226 << 20},
				Swap:   &api.MemberSwap{Accounted: true, LimitBytes: 256 << 20, FreeBytes: 256 << 20},
				Disk:   &api.DataSize{Dir: "/var/lib/cacheplane/members/" + m.MemberID, RDBBytes: 12 << 20, TotalBytes: 12 << 20}}}
		if m.Role == api.RoleRedis {
			ms.RedisRole, ms.ReplOffset = "master", 123456
		}
		req.Members = append(req.Members, ms)
	}
	return req
}

// TestDecodeFiguresAsDecodeN: what agents and the relay send decodes to
// the same value as with api.DecodeN, and what DecodeN refuses is refused.
func TestDecodeFiguresAsDecodeN(t *testing.T) {
	now := time.Date(2026, 12, 7, 23, 0, 0, 123456789, time.UTC)
	hb := sampleHeartbeat("h1", []api.Assignment{
		{MemberID: "a-1-redis-0", AddonID: "a-1", Role: api.RoleRedis},
		{MemberID: "a-1-haproxy-0", AddonID: "a-1", Role: api.RoleHAProxy},
	}, now)
	hb.Unknown = []string{"old-1-redis-0"}
	hb.Members[1].Detail = "starting: waiting for the primary"
	one, _ := json.Marshal(hb)
	batch, _ := json.Marshal([]api.HeartbeatRequest{hb, {HostID: "h2"}, sampleHeartbeat("h3", nil, now)})
	bare, _ := json.Marshal(api.HeartbeatRequest{HostID: "h4"}) // no members: "members":null
	for _, tc := range []struct {
		name  string
		body  string
		batch bool
		ok    bool
	}{
		{"heartbeat", string(one), false, true},
		{"bare heartbeat", string(bare), false, true},
		{"batch", string(batch), true, true},
		{"spaces around", " \n" + string(one) + "\n ", false, true},
		{"unknown field", `{"host_id":"h1","members":[],"colour":"red"}`, false, false},
		{"unknown nested field", `{"host_id":"h1","members":[{"member_id":"m","pid_":3}]}`, false, false},
		{"trailing data", string(one) + `{}`, false, false},
		{"empty", "  ", false, false},
		{"not JSON", `{"host_id":`, false, false},
		{"wrong type", `{"host_id":5}`, false, false},
		{"too large", `{"host_id":"` + strings.Repeat("x", 200) + `"}`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newV := func() any {
				if tc.batch {
					return &[]api.HeartbeatRequest{}
				}
				return &api.HeartbeatRequest{}
			}
			limit := 64 << 10
			if tc.name == "too large" {
				limit = 100
			}
			want, got := newV(), newV()
			werr := api.DecodeN(strings.NewReader(tc.body), want, limit)
			gerr := decodeFigures(bytes.NewReader([]byte(tc.body)), got, limit)
			if (werr == nil) != tc.ok || (gerr == nil) != tc.ok {
				t.Fatalf("DecodeN: %v, decodeFigures: %v; want ok=%v", werr, gerr, tc.ok)
			}
			if !tc.ok {
				if !errors.Is(gerr, api.ErrInvalid) {
					t.Fatalf("decodeFigures: %v is no ErrInvalid", gerr)
				}
				return
			}
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("decoded differently:\n DecodeN       %+v\n decodeFigures %+v", want, got)
			}
		})
	}
}

// BenchmarkDecodeHeartbeat: one heartbeat of a host with 20 members, as
// api.DecodeN (encoding/json) and as decodeFigures decode it.
func BenchmarkDecodeHeartbeat(b *testing.B) {
	var as []api.Assignment
	for i := range 10 {
		id := "app-000001-" + strings.Repeat("0", 3) + string(rune('0'+i))
		as = append(as, api.Assignment{MemberID: id + "-redis-0", AddonID: id, Role: api.RoleRedis},
			api.Assignment{MemberID: id + "-haproxy-0", AddonID: id, Role: api.RoleHAProxy})
	}
	body, err := json.Marshal(sampleHeartbeat("h00001", as, time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []struct {
		name   string
		decode func(*bytes.Reader, any) error
	}{
		{"encoding-json", func(r *bytes.Reader, v any) error { return api.DecodeN(r, v, api.MaxHeartbeatBytes) }},
		{"decodeFigures", func(r *bytes.Reader, v any) error { return decodeFigures(r, v, api.MaxHeartbeatBytes) }},
	} {
		b.Run(d.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var req api.HeartbeatRequest
				if err := d.decode(bytes.NewReader(body), &req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
