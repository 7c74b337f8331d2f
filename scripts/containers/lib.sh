# Shared by engine.sh and standins.sh (sourced, not run).

# The Debian mirror this machine's apt uses (the one that serves its own release).
mirror() {
  local codename
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' 2>/dev/null |
    awk -v want="$codename" '$2 == want && $3 == "deb" {print $1; exit}'
}
