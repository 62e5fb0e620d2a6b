package coordinator

import (
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// TestObservedWakesOnNews: a heartbeat wakes the controllers when it says
// something new about a member, not when only its figures or replication
// offsets moved (the periodic passes read those).
func TestObservedWakesOnNews(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	m := api.MemberStatus{MemberID: "a-redis-0", AddonID: "a", Role: api.RoleRedis, State: api.MemberRunning, Pid: 7, StartedAt: t0,
		RedisRole: "master", ReplOffset: 100, SpecHash: "s1", Stats: &api.MemberReport{}}
	with := func(f func(*api.MemberStatus)) []api.MemberStatus {
		c := m
		f(&c)
		return []api.MemberStatus{c}
	}
	same := func(*api.MemberStatus) {}
	tests := []struct {
		name string
		next api.HeartbeatRequest
		wake bool
	}{
		{"same report", api.HeartbeatRequest{HostID: "h1", Members: with(same)}, false},
		{"offset and figures moved", api.HeartbeatRequest{HostID: "h1", Stats: &api.HostReport{}, Members: with(func(c *api.MemberStatus) {
			c.ReplOffset, c.Stats = 900, &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: 1}}
		})}, false},
		{"state", api.HeartbeatRequest{HostID: "h1", Members: with(func(c *api.MemberStatus) { c.State = api.MemberFailed })}, true},
		{"detail", api.HeartbeatRequest{HostID: "h1", Members: with(func(c *api.MemberStatus) { c.Detail = "exited" })}, true},
		{"restarted", api.HeartbeatRequest{HostID: "h1", Members: with(func(c *api.MemberStatus) { c.Pid, c.StartedAt = 8, t0.Add(time.Second) })}, true},
		{"role", api.HeartbeatRequest{HostID: "h1", Members: with(func(c *api.MemberStatus) { c.RedisRole = "slave" })}, true},
		{"spec", api.HeartbeatRequest{HostID: "h1", Members: with(func(c *api.MemberStatus) { c.SpecHash = "s2" })}, true},
		{"member gone", api.HeartbeatRequest{HostID: "h1"}, true},
		{"member added", api.HeartbeatRequest{HostID: "h1", Members: append(with(same), api.MemberStatus{MemberID: "b-redis-0"})}, true},
		{"unknown member", api.HeartbeatRequest{HostID: "h1", Members: with(same), Unknown: []string{"x"}}, true},
		{"another host's first", api.HeartbeatRequest{HostID: "h2", Members: with(same)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newObserved()
			o.record(api.HeartbeatRequest{HostID: "h1", Members: with(same)}, t0)
			ch := o.Changed()
			o.record(tc.next, t0.Add(5*time.Second))
			select {
			case <-ch:
				if !tc.wake {
					t.Fatal("woke the controllers")
				}
			default:
				if tc.wake {
					t.Fatal("did not wake the controllers")
				}
			}
			if got, _ := o.member(tc.next.HostID, m.MemberID); len(tc.next.Members) > 0 && got.ReplOffset != tc.next.Members[0].ReplOffset {
				t.Fatalf("the report was not stored: offset %d", got.ReplOffset)
			}
		})
	}
}
