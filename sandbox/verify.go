//go:build linux && cgo

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// capNetBindService is CAP_NET_BIND_SERVICE, the one capability the engine
// keeps (the C slirp4netns does the same).
const capNetBindService = unix.CAP_NET_BIND_SERVICE

// Verify checks, from inside the engine, that the sandbox is what
// --enable-sandbox promises: the root is a read-only tmpfs holding only
// /etc, /run and the resolv.conf target, those are read-only mounts,
// no_new_privs is set and no capability but CAP_NET_BIND_SERVICE is left in
// any set. It does not need /proc (which the sandbox hides) and works under
// ApplySeccomp's filter.
func Verify() error {
	if !Active() {
		return errors.New("sandbox: not active")
	}
	if err := verifyRoot(); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := verifyCaps(); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}

// verifyRoot checks the mounts of the new root.
func verifyRoot() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return fmt.Errorf("statfs /: %w", err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("root is not a tmpfs (f_type %#x)", st.Type)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return errors.New("root is writable")
	}
	allowed, mounts := expectedMounts()
	entries, err := os.ReadDir("/")
	if err != nil {
		return fmt.Errorf("read /: %w", err)
	}
	for _, e := range entries {
		if !allowed[e.Name()] {
			return fmt.Errorf("unexpected /%s in the sandbox root", e.Name())
		}
	}
	for _, m := range mounts {
		if err := verifyReadOnlyMount(m); err != nil {
			return err
		}
	}
	return nil
}

// expectedMounts returns the names allowed at the top of the root and the
// mount points that must exist.
func expectedMounts() (map[string]bool, []string) {
	allowed := map[string]bool{"etc": true, "run": true}
	mounts := []string{"/etc"}
	if _, err := os.Lstat("/run"); err == nil {
		mounts = append(mounts, "/run")
	}
	if t := ResolvTarget(); t != "" {
		first, _, _ := strings.Cut(strings.TrimPrefix(t, "/"), "/")
		allowed[first] = true
		mounts = append(mounts, t)
	}
	return allowed, mounts
}

// verifyReadOnlyMount checks that path is a mount point (without /proc:
// mountinfo falls back to openat2/stat) and read-only.
func verifyReadOnlyMount(path string) error {
	mounted, sure, err := mountinfo.MountedFast(filepath.Clean(path))
	if err != nil {
		return fmt.Errorf("check mount %s: %w", path, err)
	}
	if !mounted || !sure {
		return fmt.Errorf("%s is not a mount point", path)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return fmt.Errorf("%s is writable", path)
	}
	return nil
}

// capSets returns the effective, permitted and inheritable sets of the
// calling thread (64 bits each).
func capSets() (eff, perm, inh uint64, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, 0, 0, fmt.Errorf("capget: %w", err)
	}
	eff = uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	perm = uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	inh = uint64(data[0].Inheritable) | uint64(data[1].Inheritable)<<32
	return eff, perm, inh, nil
}

// CapEff returns the effective capability set of the calling thread, as in
// the CapEff line of /proc/self/status (which the sandbox hides).
func CapEff() (uint64, error) {
	eff, _, _, err := capSets()
	return eff, err
}

// verifyCaps checks no_new_privs and every capability set.
func verifyCaps() error {
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("prctl(PR_GET_NO_NEW_PRIVS): %w", err)
	}
	if nnp != 1 {
		return errors.New("no_new_privs is not set")
	}
	eff, perm, inh, err := capSets()
	if err != nil {
		return err
	}
	const keep = uint64(1) << capNetBindService
	if perm&^keep != 0 || eff != perm || inh != 0 {
		return fmt.Errorf("capabilities not dropped: effective %#x permitted %#x inheritable %#x",
			eff, perm, inh)
	}
	for c := 0; c <= capLast(); c++ {
		in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
		if err != nil {
			return fmt.Errorf("prctl(PR_CAPBSET_READ, %d): %w", c, err)
		}
		if in == 1 && c != capNetBindService {
			return fmt.Errorf("capability %d is still in the bounding set", c)
		}
	}
	return nil
}
