//go:build cgo

package helper

// The C constructor in nsenter.c joins the target's namespaces before the Go
// runtime starts; importing "C" is what links it into the binary.

import "C"

// canJoinNamespaces is true when the namespace-entry constructor is linked in.
const canJoinNamespaces = true
