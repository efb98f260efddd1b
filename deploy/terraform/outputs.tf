output "instance_id" {
  description = "The EC2 instance."
  value       = aws_instance.rlchat.id
}

output "public_ip" {
  description = "Public IPv4 address of the instance."
  value       = aws_instance.rlchat.public_ip
}

output "public_dns" {
  description = "Public DNS name of the instance."
  value       = aws_instance.rlchat.public_dns
}

output "url" {
  description = "The chat page and the API (nginx, port 80); ready a few minutes after apply, once cloud-init has finished."
  value       = "http://${coalesce(aws_instance.rlchat.public_dns, aws_instance.rlchat.public_ip)}/"
}

output "replica_ports" {
  description = "Loopback ports of the rlchat@<port> replicas (from deploy/nginx/replicas.conf)."
  value       = local.replica_ports
}
