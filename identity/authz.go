package identity

import (
	"errors"
	"fmt"
	"time"
)

var timeNow = time.Now

// ErrUnauthenticated: the caller showed no certificate where one is needed.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrForbidden: the caller's certificate does not allow this.
var ErrForbidden = errors.New("forbidden")

// Routes without a certificate: a newcomer's join, and /metrics.
const (
	RouteJoin    = "POST /v1/join"
	RouteMetrics = "GET /metrics"
)

// agentRoutes are all an agent certificate reaches.
var agentRoutes = map[string]bool{
	"POST /v1/agent/register":   true,
	"POST /v1/agent/heartbeat":  true,
	"POST /v1/agent/alive":      true,
	"POST /v1/agent/jobs":       true,
	"POST /v1/agent/renew":      true,
	"GET /v1/agent/assignments": true,
}

// Authorize decides whether p may call method path on a coordinator's peer
// API. Members reach every route (forwarded admin calls, relayed figures,
// agent calls forwarded to the leader); agents only the agent routes (and
// only for their own host: CheckHost); a caller without a certificate only
// the join and /metrics.
func Authorize(p Peer, method, path string) error {
	route := method + " " + path
	if route == RouteJoin || route == RouteMetrics {
		return nil
	}
	switch p.Kind {
	case KindMember:
		return nil
	case KindAgent:
		if agentRoutes[route] {
			return nil
		}
		return fmt.Errorf("%w: %s %s: the certificate of agent %s reaches only the agent routes", ErrForbidden, method, path, p.Name)
	case "":
		return fmt.Errorf("%w: %s %s: this port takes only mutual TLS with a certificate of this cluster (agents join with: cacheplane hosts-token)", ErrUnauthenticated, method, path)
	}
	return fmt.Errorf("%w: certificate kind %q", ErrForbidden, p.Kind)
}

// Routes a coordinator calls on another member.
const (
	RouteProtocol = "GET /v1/internal/protocol"
	RouteFigures  = "POST /v1/internal/figures"
)

// plainAgentRoutes are the agent routes of the releases before
// identities (no renewal: those agents hold no certificate).
var plainAgentRoutes = map[string]bool{
	"POST /v1/agent/register":   true,
	"POST /v1/agent/heartbeat":  true,
	"POST /v1/agent/alive":      true,
	"POST /v1/agent/jobs":       true,
	"GET /v1/agent/assignments": true,
}

// AuthorizePlain decides whether a plaintext HTTP request may call method
// path on the peer API of a coordinator of a cluster made before
// identities and not secured yet (it has no member certificate): what such
// a cluster needs while its members are upgraded and until cluster-secure,
// and nothing more. A member's protocol question, the leader's relayed
// figures, an older agent's calls, a call another member forwards (any
// route: the operator's admin calls reach the leader so) and /metrics.
// The cluster token, when one is configured, is checked before. A member
// with a certificate serves no plaintext at all.
func AuthorizePlain(method, path string, forwarded bool) error {
	route := method + " " + path
	if forwarded || route == RouteProtocol || route == RouteFigures || route == RouteMetrics || plainAgentRoutes[route] {
		return nil
	}
	return fmt.Errorf("%w: %s %s: plain HTTP reaches only what a cluster made before identities needs (older agents and coordinators) until cacheplane cluster-secure", ErrUnauthenticated, method, path)
}

// CheckHost decides whether p may act for host hostID: an agent only for
// the host its certificate names; a member forwarding an agent's call has
// checked the agent already (see the coordinator); no certificate (the
// admin socket) for any.
func CheckHost(p Peer, hostID string) error {
	if p.Kind == KindAgent && p.Name != hostID {
		return fmt.Errorf("%w: the certificate is host %s's, not host %s's", ErrForbidden, p.Name, hostID)
	}
	return nil
}
