read -r user
case "$user" in
  *@*) echo "{\"sent\": true, \"seq\": $TRANCHE_SEQ}" ;;
  *) echo "no e-mail address" >&2; exit 65 ;;
esac
