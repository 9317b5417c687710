// Package peer serves a node's blob store to the other nodes of its site,
// read-only, over the OCI distribution API: HEAD and GET of
// /v2/<name>/blobs/<digest> and /v2/<name>/manifests/<digest>, with Range,
// only for digests the node holds or is fetching. A blob still arriving is
// served as it arrives, so a second node follows the first at LAN speed
// instead of waiting for it to finish.
//
// Peers authenticate each other with mutual TLS: every puller of a
// cluster holds a certificate signed by the site CA (a Secret the chart
// manages) for the name ServerName, and refuses a client or server without
// one. The name repository in a request path is ignored: a digest is the
// capability, and every certified peer may read every digest a peer holds.
//
// The server needs no API access: it reads the store and what the node's
// pulls announce (see fetch.Options.Announce). It must not import
// Kubernetes, the agent or fetch: the puller's main wires Server.Announce
// into the pulls, and fetch is the client side.
package peer

// ServerName is the name in every peer certificate; clients dial a peer's
// IP address and verify its certificate for this name.
const ServerName = "barge-peer"

// Files of a peer TLS directory (the chart's peer Secret, mounted): the
// site CA, and this node's certificate and key, signed by it for
// ServerName.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)
