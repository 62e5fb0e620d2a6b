package coordinator

import (
	"net/http"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/engines"
)

// handleEnginePaths answers GET /v1/engines/paths: the engine catalog of
// the FSM with every upgrade path between its versions, as package
// engines decides them (read-only; the engines CLI verb shows it).
func (s *Server) handleEnginePaths(w http.ResponseWriter, _ *http.Request) error {
	var out api.EngineCatalog
	s.store.FSM().Read(func(st *State, _ uint64) { out.Engines = append(out.Engines, st.Engines...) })
	out.Paths = engines.Paths(out.Engines)
	if out.Engines == nil {
		out.Engines = []api.EngineVersion{}
	}
	if out.Paths == nil {
		out.Paths = []api.EnginePath{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
