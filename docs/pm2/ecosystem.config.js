// pm2 start docs/pm2/ecosystem.config.js — the same processes as docs/systemd/*.service.
// Each app runs our console script directly (interpreter "none"); pm2 keeps stderr (the JSON log
// lines) in ~/.pm2/logs/<name>-error.log.
const bin = "/opt/crucible/.venv/bin/";
const common = {
  cwd: "/var/lib/crucible",
  interpreter: "none",
  autorestart: true,
  restart_delay: 5000,
  kill_timeout: 30000,
  env: { BT_WALLET_PATH: "/var/lib/crucible/wallets" },
};

module.exports = {
  apps: [
    {
      ...common,
      name: "crucible-localnet",
      script: bin + "crucible",
      args: "localnet --data-dir /var/lib/crucible/localnet --block-time 12 --log-format json",
    },
    {
      ...common,
      name: "crucible-miner",
      script: bin + "crucible-miner",
      args: "serve --wallet miner --wallet-hotkey default --store-dir /var/lib/crucible/store --host 0.0.0.0 --port 8091 --external-ip 203.0.113.7 --log-format json",
    },
    {
      ...common,
      name: "crucible-validator",
      script: bin + "crucible-validator",
      args: "run --wallet validator --wallet-hotkey default --store-dir /var/lib/crucible/store --work-dir /var/lib/crucible/validator --host 0.0.0.0 --port 8092 --external-ip 203.0.113.7 --quiet --log-format json",
      kill_timeout: 120000,
    },
    {
      ...common,
      name: "crucible-gateway",
      script: bin + "crucible-validator",
      args: "gateway --wallet validator --wallet-hotkey default --work-dir /var/lib/crucible/validator --api-keys /etc/crucible/gateway-keys.json --host 127.0.0.1 --port 8000 --log-format json",
    },
    {
      ...common,
      name: "crucible-dashboard",
      script: bin + "crucible",
      args: "dashboard --store-dir /var/lib/crucible/store --host 127.0.0.1 --port 8600",
    },
  ],
};
