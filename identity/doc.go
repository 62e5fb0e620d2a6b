// Package identity owns the fleet's daemon identities: the cluster CA
// (ECDSA P-256, kept in the coordinators' FSM), the certificates it signs
// (an agent's bound to its host id, a coordinator member's to its member
// id, an addon's server certificate for its entrypoint: IssueServer), the text of a join token (its id, its secret, and the CA
// certificate's SHA-256 so that a newcomer trusts the coordinator on first
// contact), the key, certificate and CA files a daemon keeps (0600), the
// TLS configurations both sides use (mutual, no host name check: a peer is
// who its CA-signed certificate says), and the peer API's authorization
// decisions (Authorize: given the caller's certificate and the route,
// allowed or not; AuthorizePlain: what plain HTTP reaches on a member of a
// cluster made before identities, until it is secured). It does no network I/O and keeps no state but a
// Holder's current certificate.
package identity
