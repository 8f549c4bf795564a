# Sourced by scripts/demo.sh and scripts/test-all.sh: reads scripts/apt-packages.txt (the one package
# list) and installs what is missing.
#
#   apt_packages_for demo|test      prints the packages that job needs, one per line
#   apt_install_missing demo|test   installs the missing ones (apt-get update first, only when needed)

apt_packages_list=${apt_packages_list:-$(dirname "${BASH_SOURCE[0]}")/apt-packages.txt}

apt_packages_for() {
    local job=$1 name who
    while read -r name who _; do
        [[ -z $name || $name == \#* ]] && continue
        if [[ $who == both || $who == "$job" ]]; then
            echo "$name"
        fi
    done <"$apt_packages_list"
}

apt_install_missing() {
    local job=$1 p missing=() sudo=()
    while read -r p; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done < <(apt_packages_for "$job")
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    echo "installing apt packages: ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}
