//go:build cgo

package helper

/*
#include <stdlib.h>
#include "earlytap.h"
*/
import "C"

import (
	"os"
	"unsafe"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// TakeEarlyTap returns the TAP that earlytap.c's thread opened and
// configured while the runtime started, when it did so for exactly req:
// what OpenTap(req) would return. Otherwise it closes that TAP (which
// removes it: the thread keeps only TAPs it created) and reports false, and
// the caller uses OpenTap. Only the first call can return a TAP.
func TakeEarlyTap(req Request) (*os.File, proto.TapInfo, bool) {
	var r C.struct_early_tap
	if C.early_tap_take(&r) != 0 {
		return nil, proto.TapInfo{}, false
	}
	t := earlyTapOf(&r)
	f := os.NewFile(uintptr(r.fd), tunDevice)
	if !t.matches(req) {
		f.Close()
		return nil, proto.TapInfo{}, false
	}
	return f, t.info(), true
}

// earlyTapOf converts the C record.
func earlyTapOf(r *C.struct_early_tap) earlyTap {
	return earlyTap{
		tap:      C.GoString(&r.tap[0]),
		name:     C.GoString(&r.name[0]),
		netns:    C.GoString(&r.netns[0]),
		mtu:      int(r.mtu),
		ipv6:     r.ipv6 != 0,
		offloads: uint32(r.offloads),
	}
}

// parseEarlyTap runs earlytap.c's command-line decision on args (argv
// without the program name) for the tests.
func parseEarlyTap(args []string) (earlyTap, bool) {
	argv := make([]*C.char, 0, len(args)+2)
	argv = append(argv, C.CString("slirp4netns"))
	for _, a := range args {
		argv = append(argv, C.CString(a))
	}
	defer func() {
		for _, p := range argv {
			C.free(unsafe.Pointer(p))
		}
	}()
	argv = append(argv, nil)
	var r C.struct_early_tap
	ok := C.early_tap_parse(C.int(len(argv)-1), &argv[0], &r) == 0
	return earlyTapOf(&r), ok
}
