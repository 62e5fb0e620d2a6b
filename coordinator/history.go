package coordinator

import (
	"sort"

	"github.com/cacheplane/cacheplane/api"
)

// Operation history. Finished operations stay in the state for operators
// (`ops`, `addons-info`, the dashboard) but not forever: without a bound the
// state, every snapshot and every engine pass grow with the fleet's age.
//
//   - An addon keeps its newest OpHistoryPerAddon finished operations, plus
//     those of its backups still on record (a backup's operation goes when
//     retention forgets the backup).
//   - A deleted addon keeps only its removal.
//
// Pruning is part of applying an entry, so every member prunes the same
// operations at the same index. It starts only once the state is at
// ProtocolBackups: a cluster still with a release that keeps everything
// (level 1) prunes nothing, so its members never disagree on the history.
const OpHistoryPerAddon = 20

// indexOp records o in the per-addon index.
func (s *State) indexOp(o api.Operation) {
	if s.byAddon == nil {
		s.byAddon = map[string]map[string]bool{}
	}
	ids := s.byAddon[o.AddonID]
	if ids == nil {
		ids = map[string]bool{}
		s.byAddon[o.AddonID] = ids
	}
	ids[o.ID] = true
}

// dropOp removes a finished operation and its index entry.
func (s *State) dropOp(id string) {
	o, ok := s.Operations[id]
	if !ok || s.active[id] {
		return
	}
	delete(s.Operations, id)
	if ids := s.byAddon[o.AddonID]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(s.byAddon, o.AddonID)
		}
	}
}

// finishedOps returns the addon's finished operations, newest first.
func (s *State) finishedOps(addonID string) []api.Operation {
	var out []api.Operation
	for id := range s.byAddon[addonID] {
		if o := s.Operations[id]; !s.active[id] {
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out
}

// pruneHistory applies the bound to one addon's finished operations.
func (s *State) pruneHistory(addonID string) {
	if s.Version < ProtocolBackups {
		return
	}
	if _, live := s.Addons[addonID]; !live {
		// A deleted addon: only its (newest) removal stays.
		kept := false
		for _, o := range s.finishedOps(addonID) {
			if o.Kind == api.OpRemove && !kept {
				kept = true
				continue
			}
			s.dropOp(o.ID)
		}
		return
	}
	n := 0
	for _, o := range s.finishedOps(addonID) {
		if o.BackupID != "" {
			if _, onRecord := s.Backups[o.BackupID]; onRecord {
				continue
			}
		}
		if n < OpHistoryPerAddon {
			n++
			continue
		}
		s.dropOp(o.ID)
	}
}
