package store

import (
	"os"
	"strings"
)

// readBootID returns the kernel's random id of this boot, which changes at
// every boot and is the same in every container and process of one host
// (it is not namespaced): exactly the lifetime of the page cache.
func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	id := strings.TrimSpace(string(b))
	if len(id) == 0 || len(id) > 64 {
		return ""
	}
	return id
}
