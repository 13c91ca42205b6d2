"""echoswarm on EC2: boto3 provisioning of a Locust master, N workers and the echo servers
(``python -m infra plan|up|run|status|fetch|down|sweep``), ap-northeast-1 by default."""
