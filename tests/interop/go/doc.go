// Package interop runs the real DTM Go SDK (github.com/dtm-labs/client) against a fastdtm server.
package interop
