package agent

import (
	"strings"
	"testing"
	"time"
)

func TestDecideReplica(t *testing.T) {
	const bound = 1000
	for _, tc := range []struct {
		name string
		o    replicaObs
		want promotability
		why  string
	}{
		{"primary dead or cut off: keep", replicaObs{LinkUp: false, Offset: 10}, keepPriority, "not reachable"},
		{"primary unreachable, link still up: keep", replicaObs{LinkUp: true, Offset: 10}, keepPriority, "not reachable"},
		{"its primary is a replica now", replicaObs{LinkUp: true, Offset: 10, PrimaryKnown: true, PrimaryOffset: 10}, keepPriority, "not a master"},
		{"link down, primary answers: resyncing", replicaObs{LinkUp: false, Offset: 10, PrimaryKnown: true, PrimaryMaster: true, PrimaryOffset: 10}, makeUnpromotable, "link"},
		{"in sync", replicaObs{LinkUp: true, Offset: 500, PrimaryKnown: true, PrimaryMaster: true, PrimaryOffset: 500}, makePromotable, "0 bytes behind"},
		{"ahead (primary read first elsewhere)", replicaObs{LinkUp: true, Offset: 600, PrimaryKnown: true, PrimaryMaster: true, PrimaryOffset: 500}, makePromotable, "0 bytes behind"},
		{"exactly the bound", replicaObs{LinkUp: true, Offset: 0, PrimaryKnown: true, PrimaryMaster: true, PrimaryOffset: bound}, makePromotable, "1000 bytes behind"},
		{"one byte over the bound", replicaObs{LinkUp: true, Offset: 0, PrimaryKnown: true, PrimaryMaster: true, PrimaryOffset: bound + 1}, makeUnpromotable, "1001 bytes behind"},
		{"far behind", replicaObs{LinkUp: true, Offset: 5, PrimaryKnown: true, PrimaryMaster: true, PrimaryOffset: 1 << 30}, makeUnpromotable, "bound 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := decideReplica(tc.o, bound)
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("decideReplica(%+v) = %s (%s), want %s (%q)", tc.o, got, why, tc.want, tc.why)
			}
		})
	}
}

func TestDecideFence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		o     primaryObs
		fence bool
	}{
		{"all three sentinels answer", primaryObs{Sentinels: 3, Answered: 3}, false},
		{"two of three: a majority", primaryObs{Sentinels: 3, Answered: 2}, false},
		{"one of three, just now", primaryObs{Sentinels: 3, Answered: 1, MinorityFor: 0, HadMajority: true}, false},
		{"one of three, under isolateAfter", primaryObs{Sentinels: 3, Answered: 1, MinorityFor: isolateAfter - time.Millisecond, HadMajority: true}, false},
		{"one of three (its own host's) for isolateAfter: isolated", primaryObs{Sentinels: 3, Answered: 1, MinorityFor: isolateAfter, HadMajority: true}, true},
		{"none for long", primaryObs{Sentinels: 3, Answered: 0, MinorityFor: time.Minute, HadMajority: true}, true},
		{"none for long, never a majority: sentinels still starting (starter -> business)", primaryObs{Sentinels: 3, Answered: 0, MinorityFor: time.Minute}, false},
		{"one of three for long, never a majority", primaryObs{Sentinels: 3, Answered: 1, MinorityFor: time.Minute}, false},
		{"no sentinels (not a business addon)", primaryObs{}, false},
		{"one of two is no majority", primaryObs{Sentinels: 2, Answered: 1, MinorityFor: 2 * isolateAfter, HadMajority: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, why := decideFence(tc.o); got != tc.fence {
				t.Errorf("decideFence(%+v) = %v (%s), want %v", tc.o, got, why, tc.fence)
			}
		})
	}
}
