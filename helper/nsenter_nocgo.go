//go:build !cgo

package helper

// canJoinNamespaces is false without cgo: the constructor in nsenter.c that
// joins the target's namespaces before the Go runtime starts is not linked
// in, so a helper would open the TAP in the wrong namespace. Main refuses.
const canJoinNamespaces = false
