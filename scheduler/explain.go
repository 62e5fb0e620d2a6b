package scheduler

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cacheplane/cacheplane/api"
)

// HostVerdict is what the scheduler thought of one host for one member.
type HostVerdict struct {
	HostID string `json:"host_id"`
	// Reason is empty for the chosen host.
	Reason Reason `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// MemberExplanation is how one member was placed.
type MemberExplanation struct {
	MemberID string   `json:"member_id"`
	Role     api.Role `json:"role"`
	// HostID is the chosen host; empty when the member could not be placed.
	HostID string `json:"host_id,omitempty"`
	Port   int    `json:"port,omitempty"`
	// Kept members were not placed by this call; Hosts is empty for them.
	Kept bool `json:"kept,omitempty"`
	// Hosts has one verdict per host of State.Hosts, by host id.
	Hosts []HostVerdict `json:"hosts,omitempty"`
}

// Explanation says, member by member, where each went and why every other
// host was not chosen.
type Explanation struct {
	AddonID string              `json:"addon_id"`
	Members []MemberExplanation `json:"members"`
}

// Member returns the explanation of one member.
func (e Explanation) Member(memberID string) (MemberExplanation, bool) {
	for _, m := range e.Members {
		if m.MemberID == memberID {
			return m, true
		}
	}
	return MemberExplanation{}, false
}

// Reason is why hostID was not chosen for memberID: "" with ok when it was
// chosen, ok false when the explanation does not mention the pair.
func (e Explanation) Reason(memberID, hostID string) (r Reason, ok bool) {
	m, found := e.Member(memberID)
	if !found {
		return "", false
	}
	for _, v := range m.Hosts {
		if v.HostID == hostID {
			return v.Reason, true
		}
	}
	return "", false
}

// String renders the explanation for operators, one line per member and one
// indented line per host.
func (e Explanation) String() string {
	var b strings.Builder
	for _, m := range e.Members {
		switch {
		case m.Kept:
			fmt.Fprintf(&b, "%s: kept on %s:%d\n", m.MemberID, m.HostID, m.Port)
			continue
		case m.HostID == "":
			fmt.Fprintf(&b, "%s: not placed\n", m.MemberID)
		default:
			fmt.Fprintf(&b, "%s: placed on %s:%d\n", m.MemberID, m.HostID, m.Port)
		}
		for _, v := range m.Hosts {
			if v.Reason == "" {
				fmt.Fprintf(&b, "  %s: chosen\n", v.HostID)
				continue
			}
			fmt.Fprintf(&b, "  %s: %s (%s)\n", v.HostID, v.Reason, v.Detail)
		}
	}
	return b.String()
}

// summarize counts reasons, e.g. "2 not-ready, 1 anti-affinity".
func summarize(verdicts []HostVerdict) string {
	counts := map[Reason]int{}
	for _, v := range verdicts {
		if v.Reason != "" {
			counts[v.Reason]++
		}
	}
	rs := make([]string, 0, len(counts))
	for r := range counts {
		rs = append(rs, string(r))
	}
	sort.Strings(rs)
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%d %s", counts[Reason(r)], r)
	}
	return strings.Join(parts, ", ")
}
