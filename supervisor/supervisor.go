package supervisor

// Main runs the supervisor with the given arguments (without argv[0]) and
// returns the process exit status.
func Main(args []string) int {
	return 1
}
