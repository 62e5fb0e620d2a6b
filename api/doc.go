// Package api owns cacheplane's wire contract: the JSON types exchanged between
// the CLI, the coordinator, the agents and the e2e tests, the validation of
// every admin request, the sentinel errors and their one mapping to HTTP
// status codes, and the small HTTP clients (admin socket and peer API).
//
// It holds no state and makes no decisions; the coordinator owns state,
// the scheduler owns placement.
package api
