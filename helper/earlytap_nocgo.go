//go:build !cgo

package helper

import (
	"os"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// TakeEarlyTap reports false without cgo: there is no early thread (see
// earlytap.go).
func TakeEarlyTap(Request) (*os.File, proto.TapInfo, bool) { return nil, proto.TapInfo{}, false }
