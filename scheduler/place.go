package scheduler

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/cacheplane/cacheplane/api"
)

// roleOrder is the order members are placed and listed in.
var roleOrder = []api.Role{api.RoleRedis, api.RoleSentinel, api.RoleHAProxy}

func roleCount(p api.Plan, r api.Role) int {
	switch r {
	case api.RoleRedis:
		return p.Redis()
	case api.RoleSentinel:
		return p.Sentinels()
	case api.RoleHAProxy:
		return p.HAProxies()
	}
	return 0
}

func roleRank(r api.Role) int {
	for i, o := range roleOrder {
		if o == r {
			return i
		}
	}
	return len(roleOrder)
}

// sortMembers orders members by role (redis, sentinel, haproxy) then by id,
// shorter ids first so that redis-2 comes before redis-10.
func sortMembers(ms []api.Member) {
	sort.SliceStable(ms, func(i, j int) bool {
		a, b := ms[i], ms[j]
		if ra, rb := roleRank(a.Role), roleRank(b.Role); ra != rb {
			return ra < rb
		}
		if len(a.ID) != len(b.ID) {
			return len(a.ID) < len(b.ID)
		}
		return a.ID < b.ID
	})
}

// nextID is the lowest-index member id of role not in used; it marks it used.
func nextID(addonID string, role api.Role, used map[string]bool) string {
	for i := 0; ; i++ {
		id := MemberID(addonID, role, i)
		if !used[id] {
			used[id] = true
			return id
		}
	}
}

// what names the thing a member is placed for in operator messages.
func what(plan api.Plan, role api.Role) string {
	if role == api.RoleRedis {
		return plan.Name
	}
	return fmt.Sprintf("a %s of %s", role, plan.Name)
}

// noHost explains why no host took n: with hosts refused only for memory,
// the largest free memory among them; else a count of reasons.
func (f *fleet) noHost(op, addonID string, plan api.Plan, n need, verdicts []HostVerdict) error {
	var best *hostUsage
	for _, v := range verdicts {
		if v.Reason != ReasonMemory {
			continue
		}
		if h := f.byID[v.HostID]; best == nil || h.freeMB() > best.freeMB() {
			best = h
		}
	}
	if best != nil {
		free := max(best.freeMB(), 0)
		return capacityErr(op, addonID, "no ready host has %d MB free for %s (largest free: %d MB on %s)",
			n.needMB(), what(plan, n.role), free, best.host.ID)
	}
	if len(verdicts) == 0 {
		return capacityErr(op, addonID, "no host is registered")
	}
	return capacityErr(op, addonID, "no host can run %s (%s): %s", n.memberID, what(plan, n.role), summarize(verdicts))
}

func excludeSet(hosts []string) map[string]string {
	ex := map[string]string{}
	for _, id := range hosts {
		ex[id] = "excluded by the request"
	}
	return ex
}

func validatePlan(p api.Plan) error {
	if p.Kind != api.PlanStarter && p.Kind != api.PlanBusiness {
		return api.Invalidf("plan %q has unknown kind %q", p.Name, p.Kind)
	}
	if p.MemoryMB <= 0 {
		return api.Invalidf("plan %q has no memory size", p.Name)
	}
	return nil
}

func validateRequest(s State, req Request) error {
	if req.AddonID == "" {
		return api.Invalidf("addon id is missing")
	}
	if err := validatePlan(req.Plan); err != nil {
		return err
	}
	if err := s.portRange().Validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	perRole := map[api.Role]int{}
	onHost := map[string]bool{}
	for _, m := range req.Keep {
		switch {
		case m.ID == "" || m.HostID == "":
			return api.Invalidf("kept member %q has no id or no host", m.ID)
		case seen[m.ID]:
			return api.Invalidf("kept member %s is listed twice", m.ID)
		case roleCount(req.Plan, m.Role) == 0:
			return api.Invalidf("kept member %s has role %q, which plan %s does not run", m.ID, m.Role, req.Plan.Name)
		case onHost[string(m.Role)+"\x00"+m.HostID]:
			return api.Invalidf("kept members put two %s members on host %s", m.Role, m.HostID)
		}
		seen[m.ID] = true
		onHost[string(m.Role)+"\x00"+m.HostID] = true
		perRole[m.Role]++
		if perRole[m.Role] > roleCount(req.Plan, m.Role) {
			return api.Invalidf("plan %s runs %d %s members, %d are kept", req.Plan.Name, roleCount(req.Plan, m.Role), m.Role, perRole[m.Role])
		}
	}
	return nil
}

// Place decides where the members of addon req.AddonID run on plan
// req.Plan, keeping req.Keep where they are and never choosing
// req.ExcludeHosts.
//
// Memory: members of other addons count at their plan; members of this
// addon present in state but not kept count at their current plan (they run
// until the operation removes them); kept members count at req.Plan. Kept
// members are not re-checked for fit: PlanChangeFits does that.
//
// A failure to place wraps api.ErrNoCapacity (a *CapacityError with one
// line for the operator); a malformed request wraps api.ErrInvalid. The
// Explanation covers every member decided before the failure, the failing
// one included.
func Place(state State, req Request) (Placement, Explanation, error) {
	const op = "place"
	expl := Explanation{AddonID: req.AddonID}
	if err := validateRequest(state, req); err != nil {
		return Placement{}, expl, fmt.Errorf("%s %s: %w", op, req.AddonID, err)
	}
	f := newFleet(state)
	if err := f.accountAddons(state, req.AddonID); err != nil {
		return Placement{}, expl, fmt.Errorf("%s %s: %w", op, req.AddonID, err)
	}

	kept := map[string]bool{}
	for _, m := range req.Keep {
		kept[m.ID] = true
	}
	used := map[string]bool{} // member ids of this addon, kept or still running
	for _, a := range state.Addons {
		if a.ID != req.AddonID {
			continue
		}
		for _, m := range a.Members {
			used[m.ID] = true
			if kept[m.ID] {
				continue
			}
			p, err := state.planOf(a.Plan)
			if err != nil {
				return Placement{}, expl, fmt.Errorf("%s %s: addon %s: %w", op, req.AddonID, a.ID, err)
			}
			f.account(m, Reservation(m.Role, p))
		}
	}

	members := append([]api.Member(nil), req.Keep...)
	sortMembers(members)
	perRole := map[api.Role][]api.Member{}
	for _, m := range members {
		used[m.ID] = true
		f.account(m, Reservation(m.Role, req.Plan))
		f.own(m)
		perRole[m.Role] = append(perRole[m.Role], m)
		expl.Members = append(expl.Members, MemberExplanation{MemberID: m.ID, Role: m.Role, HostID: m.HostID, Port: m.Port, Kept: true})
	}

	exclude := excludeSet(req.ExcludeHosts)
	if err := f.enoughHosts(op, req, exclude); err != nil {
		return Placement{}, expl, err
	}

	for _, role := range roleOrder {
		missing := roleCount(req.Plan, role) - len(perRole[role])
		if missing <= 0 {
			continue
		}
		mb := Reservation(role, req.Plan)
		if role == api.RoleHAProxy && missing == 2 {
			n0 := need{memberID: nextID(req.AddonID, role, used), role: role, mb: mb, exclude: exclude}
			n1 := need{memberID: nextID(req.AddonID, role, used), role: role, mb: mb, exclude: exclude}
			ms, es, err := f.placePair(op, req.AddonID, req.Plan, n0, n1)
			expl.Members = append(expl.Members, es...)
			if err != nil {
				return Placement{}, expl, err
			}
			members = append(members, ms...)
			continue
		}
		for i := 0; i < missing; i++ {
			n := need{memberID: nextID(req.AddonID, role, used), role: role, mb: mb, exclude: exclude}
			if role == api.RoleHAProxy && !vipEntrypoint(state, req.AddonID) {
				for _, p := range perRole[role] {
					if p.Port > 0 {
						n.fixedPort = p.Port
						break
					}
				}
			}
			if req.Plan.Kind == api.PlanStarter && role == api.RoleHAProxy && len(perRole[api.RoleRedis]) > 0 {
				n.onHost = perRole[api.RoleRedis][0].HostID
			}
			if req.Plan.Kind == api.PlanStarter && role == api.RoleRedis && len(perRole[api.RoleHAProxy]) == 0 {
				n.alsoMB = Reservation(api.RoleHAProxy, req.Plan) * roleCount(req.Plan, api.RoleHAProxy)
			}
			m, e, err := f.placeOne(op, req.AddonID, req.Plan, n)
			expl.Members = append(expl.Members, e)
			if err != nil {
				return Placement{}, expl, err
			}
			if role == api.RoleRedis {
				m.RedisRole = RedisReplica
				if len(perRole[role]) == 0 {
					m.RedisRole = RedisPrimary
				}
			}
			perRole[role] = append(perRole[role], m)
			members = append(members, m)
		}
	}

	sortMembers(members)
	return Placement{
		AddonID:    req.AddonID,
		Plan:       req.Plan.Name,
		Members:    members,
		Entrypoint: f.entrypoint(req.Plan, members),
	}, expl, nil
}

// enoughHosts refuses early a plan that needs more distinct hosts (one per
// sentinel) than the fleet has ready.
func (f *fleet) enoughHosts(op string, req Request, exclude map[string]string) error {
	want := 0
	for _, r := range roleOrder {
		want = max(want, roleCount(req.Plan, r))
	}
	if want < 2 {
		return nil
	}
	hosts := map[string]bool{}
	for _, m := range req.Keep {
		hosts[m.HostID] = true
	}
	for _, h := range f.hosts {
		if _, ex := exclude[h.host.ID]; !ex && h.host.State == api.HostReady {
			hosts[h.host.ID] = true
		}
	}
	if len(hosts) >= want {
		return nil
	}
	ids := make([]string, 0, len(hosts))
	for id := range hosts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	found := "none"
	if len(ids) > 0 {
		found = fmt.Sprintf("%d (%s)", len(ids), strings.Join(ids, ", "))
	}
	return capacityErr(op, req.AddonID, "%s needs %d ready hosts (one per sentinel), found %s", req.Plan.Name, want, found)
}

// commit records a placed member on its host.
func (f *fleet) commit(m api.Member, mb int) {
	f.account(m, mb)
	f.own(m)
}

func (f *fleet) member(n need, h *hostUsage, port int) api.Member {
	return api.Member{ID: n.memberID, Role: n.role, HostID: h.host.ID, Address: h.host.Address, Port: port}
}

// placeOne chooses the best feasible host for one member and commits it.
func (f *fleet) placeOne(op, addonID string, plan api.Plan, n need) (api.Member, MemberExplanation, error) {
	e := MemberExplanation{MemberID: n.memberID, Role: n.role}
	cands, verdicts := f.feasible(n)
	e.Hosts = verdicts
	if len(cands) == 0 {
		return api.Member{}, e, f.noHost(op, addonID, plan, n, verdicts)
	}
	ranked := f.rank(cands, n)
	h := ranked[0]
	f.rankedVerdicts(e.Hosts, ranked, h, n)
	port := n.fixedPort
	if port == 0 {
		var ok bool
		if port, ok = h.lowestFree(f.ports); !ok {
			return api.Member{}, e, errors.New("scheduler: feasible host has no free port") // checkPorts guarantees one
		}
	}
	m := f.member(n, h, port)
	f.commit(m, n.mb)
	e.HostID, e.Port = h.host.ID, port
	return m, e, nil
}

// placePair places two haproxy members on two hosts, listening on the same
// port: the lowest free on both. It tries first hosts in rank order and
// takes the best partner of the first that has one.
func (f *fleet) placePair(op, addonID string, plan api.Plan, n0, n1 need) ([]api.Member, []MemberExplanation, error) {
	e0 := MemberExplanation{MemberID: n0.memberID, Role: n0.role}
	e1 := MemberExplanation{MemberID: n1.memberID, Role: n1.role}
	cands, verdicts := f.feasible(n0)
	e0.Hosts = verdicts
	if len(cands) == 0 {
		return nil, []MemberExplanation{e0}, f.noHost(op, addonID, plan, n0, verdicts)
	}
	ranked := f.rank(cands, n0)
	var firstErr error
	skipped := map[string]string{}
	for _, h0 := range ranked {
		n1.partner = h0
		c1, v1 := f.feasible(n1)
		if len(c1) == 0 {
			if firstErr == nil {
				e1.Hosts = v1
				firstErr = f.noHost(op, addonID, plan, n1, v1)
			}
			skipped[h0.host.ID] = fmt.Sprintf("no other host can run the second haproxy with it (%s)", summarize(v1))
			continue
		}
		r1 := f.rank(c1, n1)
		h1 := r1[0]
		port, ok := lowestCommon(h0, h1, f.ports)
		if !ok {
			return nil, nil, errors.New("scheduler: feasible haproxy pair has no common port") // checkPorts guarantees one
		}
		f.rankedVerdicts(e0.Hosts, ranked, h0, n0)
		for i := range e0.Hosts {
			if d, ok := skipped[e0.Hosts[i].HostID]; ok {
				e0.Hosts[i].Reason, e0.Hosts[i].Detail = ReasonNoPort, d
			}
		}
		e1.Hosts = v1
		f.rankedVerdicts(e1.Hosts, r1, h1, n1)
		m0, m1 := f.member(n0, h0, port), f.member(n1, h1, port)
		f.commit(m0, n0.mb)
		f.commit(m1, n1.mb)
		e0.HostID, e0.Port = h0.host.ID, port
		e1.HostID, e1.Port = h1.host.ID, port
		return []api.Member{m0, m1}, []MemberExplanation{e0, e1}, nil
	}
	for i := range e0.Hosts {
		if d, ok := skipped[e0.Hosts[i].HostID]; ok {
			e0.Hosts[i].Reason, e0.Hosts[i].Detail = ReasonNoPort, d
		}
	}
	return nil, []MemberExplanation{e0, e1}, firstErr
}

// entrypoint is the starter's redis address:port or the business addon's
// first haproxy address:port; "" when the member's host has no address.
func (f *fleet) entrypoint(plan api.Plan, members []api.Member) string {
	role := api.RoleRedis
	if plan.HAProxies() > 0 {
		role = api.RoleHAProxy
	}
	for _, m := range members { // sorted: the first of role
		if m.Role != role {
			continue
		}
		addr := m.Address
		if h, ok := f.byID[m.HostID]; ok && h.host.Address != "" {
			addr = h.host.Address
		}
		if addr == "" || m.Port <= 0 {
			return ""
		}
		return net.JoinHostPort(addr, strconv.Itoa(m.Port))
	}
	return ""
}

// Replace places one member of addon elsewhere (self-healing after a host
// loss, or a drain): never on its current host nor on excludeHosts, with the
// same anti-affinity against the addon's remaining members. The new member
// gets the lowest unused id of its role; a redis member comes back as a
// replica (the failover decides the primary); an haproxy member keeps the
// port its partner listens on, so the entrypoint port stays the same.
//
// All members of addon, the replaced one included, count for memory and
// ports until the operation removes them. The addon passed in is
// authoritative over its copy in state.
func Replace(state State, addon api.Addon, memberID string, excludeHosts []string) (api.Member, Explanation, error) {
	const op = "replace"
	expl := Explanation{AddonID: addon.ID}
	var old api.Member
	found := false
	for _, m := range addon.Members {
		if m.ID == memberID {
			old, found = m, true
			break
		}
	}
	if !found {
		return api.Member{}, expl, fmt.Errorf("%s %s: member %s: %w", op, addon.ID, memberID, api.ErrNotFound)
	}
	if err := state.portRange().Validate(); err != nil {
		return api.Member{}, expl, fmt.Errorf("%s %s: %w", op, addon.ID, err)
	}
	plan, err := state.planOf(addon.Plan)
	if err != nil {
		return api.Member{}, expl, fmt.Errorf("%s %s: %w", op, addon.ID, err)
	}
	f := newFleet(state)
	if err := f.accountAddons(state, addon.ID); err != nil {
		return api.Member{}, expl, fmt.Errorf("%s %s: %w", op, addon.ID, err)
	}
	used := map[string]bool{}
	fixedPort := 0
	for _, m := range addon.Members {
		used[m.ID] = true
		f.account(m, Reservation(m.Role, plan))
		if m.ID == memberID {
			continue
		}
		f.own(m)
		if m.Role == api.RoleHAProxy && old.Role == api.RoleHAProxy && fixedPort == 0 {
			fixedPort = m.Port
		}
	}
	if old.Role == api.RoleHAProxy && fixedPort == 0 {
		fixedPort = old.Port
	}
	if entrypointIsVIP(state, addon) {
		// The pair shares a port only for an entrypoint on a haproxy host's
		// own address; a VIP entrypoint is an address of its own, which the
		// holder binds whatever its member port, so any free port does.
		fixedPort = 0
	}
	exclude := excludeSet(excludeHosts)
	if _, ok := exclude[old.HostID]; !ok {
		exclude[old.HostID] = "current host of " + memberID
	}
	n := need{
		memberID:  nextID(addon.ID, old.Role, used),
		role:      old.Role,
		mb:        Reservation(old.Role, plan),
		fixedPort: max(fixedPort, 0),
		exclude:   exclude,
	}
	m, e, err := f.placeOne(op, addon.ID, plan, n)
	expl.Members = append(expl.Members, e)
	if err != nil {
		return api.Member{}, expl, err
	}
	if m.Role == api.RoleRedis {
		m.RedisRole = RedisReplica
	}
	return m, expl, nil
}

// PlanChangeFits checks that every host holding a redis member of addon has
// room to resize it from the addon's current plan to newPlan. Downsizing
// always fits. It checks resizing only: the members a change to a business
// plan adds are placed with Place (Request.Keep), and a change to a starter
// plan is checked against all current redis members, before the surplus is
// removed. A refusal wraps api.ErrNoCapacity.
func PlanChangeFits(state State, addon api.Addon, newPlan api.Plan) error {
	const op = "resize"
	if err := validatePlan(newPlan); err != nil {
		return fmt.Errorf("%s %s: %w", op, addon.ID, err)
	}
	oldPlan, err := state.planOf(addon.Plan)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, addon.ID, err)
	}
	f := newFleet(state)
	if err := f.accountAddons(state, addon.ID); err != nil {
		return fmt.Errorf("%s %s: %w", op, addon.ID, err)
	}
	delta := Reservation(api.RoleRedis, newPlan) - Reservation(api.RoleRedis, oldPlan)
	grow := map[string]int{}
	names := map[string][]string{}
	for _, m := range addon.Members {
		f.account(m, Reservation(m.Role, oldPlan))
		if m.Role == api.RoleRedis {
			grow[m.HostID] += delta
			names[m.HostID] = append(names[m.HostID], m.ID)
		}
	}
	if delta <= 0 {
		return nil
	}
	ids := make([]string, 0, len(grow))
	for id := range grow {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		h := f.get(id)
		who := strings.Join(names[id], ", ")
		if !h.known {
			return capacityErr(op, addon.ID, "%s runs on host %s, which is not registered", who, id)
		}
		if h.freeMB() < grow[id] {
			return capacityErr(op, addon.ID, "host %s has %d MB free; resizing %s from %s to %s needs %d MB more",
				id, max(h.freeMB(), 0), who, oldPlan.Name, newPlan.Name, grow[id])
		}
	}
	return nil
}

// entrypointIsVIP reports whether the addon's entrypoint address is no
// host's own address (a VIP from the entrypoint pool).
func entrypointIsVIP(state State, addon api.Addon) bool {
	ep, _, err := net.SplitHostPort(addon.Entrypoint)
	if err != nil || ep == "" {
		return false
	}
	for _, h := range state.Hosts {
		if h.Address == ep {
			return false
		}
	}
	return true
}

// vipEntrypoint reports whether addon id (in state) has a VIP entrypoint:
// its haproxy members then need not share a port.
func vipEntrypoint(state State, id string) bool {
	for _, a := range state.Addons {
		if a.ID == id {
			return entrypointIsVIP(state, a)
		}
	}
	return false
}
