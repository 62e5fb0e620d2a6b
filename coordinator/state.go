package coordinator

import (
	"maps"
	"sort"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/identity"
)

// State is the whole FSM state. It is only mutated by fsm.apply*; readers get
// copies through the FSM's accessors.
type State struct {
	// Version is the highest protocol level of the entries applied
	// (ProtocolBase at least). Written into every snapshot: a release
	// whose MaxProtocol is lower refuses to restore it.
	Version      int                              `json:"version"`
	Coordinators map[string]api.CoordinatorMember `json:"coordinators"`
	Plans        []api.Plan                       `json:"plans"`
	Engines      []api.EngineVersion              `json:"engines"`
	Hosts        map[string]api.Host              `json:"hosts"`
	Addons       map[string]api.Addon             `json:"addons"`
	Operations   map[string]api.Operation         `json:"operations"`
	Backups      map[string]api.Backup            `json:"backups"`
	// Jobs are the backup and restore jobs of active operations, by id
	// (dropped when their operation ends).
	Jobs map[string]operation.Job `json:"jobs,omitempty"`
	// BackupSeqs is the last backup Seq given to each app (never reused,
	// even once the records are forgotten).
	BackupSeqs map[string]int `json:"backup_seqs,omitempty"`
	// CA is the cluster CA (made by the first leader, or cluster-secure);
	// the key is in the FSM only, which only coordinators receive.
	CA *identity.CA `json:"ca,omitempty"`
	// JoinTokens by id: the hash of the secret, expiry, use.
	JoinTokens map[string]JoinToken `json:"join_tokens,omitempty"`
	// HostCerts: each joined host's agent certificate now in force.
	HostCerts map[string]HostCert `json:"host_certs,omitempty"`

	// Indexes, rebuilt on restore, never serialized.
	byApp   map[string]string          // app → addon id
	active  map[string]bool            // ids of pending or running operations
	byAddon map[string]map[string]bool // addon id → its operations' ids (history.go)
	hosts   hostIndex                  // members by host (hostindex.go)
}

func newState() *State {
	return &State{
		Version:      ProtocolBase,
		Coordinators: map[string]api.CoordinatorMember{},
		Hosts:        map[string]api.Host{},
		Addons:       map[string]api.Addon{},
		Operations:   map[string]api.Operation{},
		Backups:      map[string]api.Backup{},
		Jobs:         map[string]operation.Job{},
		BackupSeqs:   map[string]int{},
		JoinTokens:   map[string]JoinToken{},
		HostCerts:    map[string]HostCert{},
		byApp:        map[string]string{},
		active:       map[string]bool{},
		byAddon:      map[string]map[string]bool{},
		hosts:        newHostIndex(),
	}
}

// shallowCopy copies the serialized maps (not their values: the FSM
// replaces a value, never changes one in place), for a snapshot encoded
// while later entries apply. The indexes are not copied.
func (s *State) shallowCopy() *State {
	return &State{
		Version:      s.Version,
		Coordinators: maps.Clone(s.Coordinators),
		Plans:        s.Plans,
		Engines:      s.Engines,
		Hosts:        maps.Clone(s.Hosts),
		Addons:       maps.Clone(s.Addons),
		Operations:   maps.Clone(s.Operations),
		Backups:      maps.Clone(s.Backups),
		Jobs:         maps.Clone(s.Jobs),
		BackupSeqs:   maps.Clone(s.BackupSeqs),
		CA:           s.CA,
		JoinTokens:   maps.Clone(s.JoinTokens),
		HostCerts:    maps.Clone(s.HostCerts),
	}
}

// reindex rebuilds the indexes from the maps.
func (s *State) reindex() {
	s.byApp, s.active, s.byAddon = map[string]string{}, map[string]bool{}, map[string]map[string]bool{}
	for id, a := range s.Addons {
		s.byApp[a.App] = id
	}
	for id, o := range s.Operations {
		s.indexOp(o)
		if o.State == api.OpPending || o.State == api.OpRunning {
			s.active[id] = true
		}
	}
	s.reindexHosts()
}

// putOp stores an operation and keeps the indexes; the jobs of an
// operation that ended are dropped (a late report of one is refused), and
// the addon's history is kept to its bound (history.go).
func (s *State) putOp(o api.Operation) {
	s.Operations[o.ID] = o
	s.indexOp(o)
	if o.State == api.OpPending || o.State == api.OpRunning {
		s.active[o.ID] = true
		return
	}
	delete(s.active, o.ID)
	defer s.pruneHistory(o.AddonID)
	if o.Kind == api.OpBackup || o.Kind == api.OpRestore {
		for id, j := range s.Jobs {
			if j.OperationID == o.ID {
				delete(s.Jobs, id)
			}
		}
	}
}

// activeOps returns the pending or running operations of a kind, oldest
// first, with their steps copied.
func (s *State) activeOps(kind api.OperationKind) []api.Operation {
	var out []api.Operation
	for id := range s.active {
		o := s.Operations[id]
		if o.Kind == kind {
			o.Steps = append([]api.Step(nil), o.Steps...)
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// addonByApp returns the redis addon of an app, if any.
func (s *State) addonByApp(app string) (api.Addon, bool) {
	id, ok := s.byApp[app]
	if !ok {
		return api.Addon{}, false
	}
	a, ok := s.Addons[id]
	return a, ok
}

func sortedAddons(m map[string]api.Addon) []api.Addon {
	out := make([]api.Addon, 0, len(m))
	for _, a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func sortedOperations(m map[string]api.Operation) []api.Operation {
	out := make([]api.Operation, 0, len(m))
	for _, o := range m {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func sortedHosts(m map[string]api.Host) []api.Host {
	out := make([]api.Host, 0, len(m))
	for _, h := range m {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
