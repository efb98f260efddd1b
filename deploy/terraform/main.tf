# rlchat on AWS: one EC2 instance running what a bare-metal install runs. cloud-init writes
# the same files as deploy/systemd and deploy/nginx (read from there, not copied), installs
# rlchat in /opt/rlchat/venv, and starts two replicas (rlchat@8001, rlchat@8002) behind
# nginx, sharing a PostgreSQL server on the same instance.
#
# One instance, one database, on purpose: the smallest setup that runs several replicas on
# one shared database. For a managed database (RDS), point RLCHAT_DATABASE in
# /etc/rlchat/rlchat.env at it and allow its address in the unit (IPAddressAllow=).

locals {
  repo_deploy = "${path.module}/.."

  # The replicas are the ports nginx balances over, so the two never disagree.
  replicas_conf = file("${local.repo_deploy}/nginx/replicas.conf")
  replica_ports = [for m in regexall("(?m)^\\s*server 127\\.0\\.0\\.1:(\\d+)", local.replicas_conf) : m[0]]

  # Who may reach the instance: the world on 80 and 443 (nginx), nothing else.
  web_ingress = {
    http-ipv4  = { port = 80, cidr_ipv4 = "0.0.0.0/0", cidr_ipv6 = null }
    https-ipv4 = { port = 443, cidr_ipv4 = "0.0.0.0/0", cidr_ipv6 = null }
    http-ipv6  = { port = 80, cidr_ipv4 = null, cidr_ipv6 = "::/0" }
    https-ipv6 = { port = 443, cidr_ipv4 = null, cidr_ipv6 = "::/0" }
  }

  models_dir = "/opt/rlchat/models"
  runs       = join(" ", [for run in var.model_runs : "${local.models_dir}/${run}"])

  models_bucket = var.models_s3_uri == "" ? "" : split("/", trimprefix(var.models_s3_uri, "s3://"))[0]
  models_prefix = var.models_s3_uri == "" ? "" : trim(trimprefix(trimprefix(var.models_s3_uri, "s3://"), local.models_bucket), "/")

  setup_script = templatefile("${path.module}/rlchat-setup.sh.tftpl", {
    rlchat_package  = var.rlchat_package
    torch_version   = var.torch_version
    torch_index_url = var.torch_index_url
    models_s3_uri   = var.models_s3_uri
    models_dir      = local.models_dir
    runs            = local.runs
    replica_ports   = local.replica_ports
  })

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    unit          = file("${local.repo_deploy}/systemd/rlchat@.service")
    target        = file("${local.repo_deploy}/systemd/rlchat.target")
    env           = file("${local.repo_deploy}/systemd/rlchat.env")
    nginx_conf    = file("${local.repo_deploy}/nginx/rlchat.conf")
    replicas_conf = local.replicas_conf
    setup_script  = local.setup_script
    with_awscli   = var.models_s3_uri != ""
  })
}

data "aws_ami" "debian" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  # Debian's own account for its cloud images.
  owners = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-12-${var.architecture == "arm64" ? "arm64" : "amd64"}-*"]
  }

  filter {
    name   = "architecture"
    values = [var.architecture]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

data "aws_vpc" "default" {
  count   = var.subnet_id == null ? 1 : 0
  default = true
}

data "aws_subnet" "chosen" {
  count = var.subnet_id == null ? 0 : 1
  id    = var.subnet_id
}

resource "aws_security_group" "rlchat" {
  name        = "${var.name}-web"
  description = "rlchat: HTTP and HTTPS in (nginx), anything out"
  vpc_id      = var.subnet_id == null ? data.aws_vpc.default[0].id : data.aws_subnet.chosen[0].vpc_id
}

# Ingress: 80 and 443 only. nginx listens on 80; 443 is for the TLS server block an operator
# adds (e.g. `certbot --nginx -d chat.example.org`). The replicas (8001, 8002) and
# PostgreSQL listen on loopback only and are never reachable from outside.
resource "aws_vpc_security_group_ingress_rule" "web" {
  for_each = local.web_ingress

  security_group_id = aws_security_group.rlchat.id
  description       = each.key
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr_ipv4
  cidr_ipv6         = each.value.cidr_ipv6
}

# SSH only when asked for, from the networks named.
resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.ssh_cidr_blocks)

  security_group_id = aws_security_group.rlchat.id
  description       = "ssh from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

# Egress open: apt, PyPI and PyTorch's index at first boot, S3 for the models.
resource "aws_vpc_security_group_egress_rule" "all" {
  for_each = { ipv4 = { cidr_ipv4 = "0.0.0.0/0", cidr_ipv6 = null }, ipv6 = { cidr_ipv4 = null, cidr_ipv6 = "::/0" } }

  security_group_id = aws_security_group.rlchat.id
  description       = "all out (${each.key})"
  ip_protocol       = "-1"
  cidr_ipv4         = each.value.cidr_ipv4
  cidr_ipv6         = each.value.cidr_ipv6
}

# An instance role only when the models come from S3: read access to that prefix, nothing else.
data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "read_models" {
  count = var.models_s3_uri == "" ? 0 : 1

  statement {
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${local.models_bucket}"]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [local.models_prefix == "" ? "*" : "${local.models_prefix}/*"]
    }
  }

  statement {
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${local.models_bucket}/${local.models_prefix == "" ? "*" : "${local.models_prefix}/*"}"]
  }
}

resource "aws_iam_role" "rlchat" {
  count              = var.models_s3_uri == "" ? 0 : 1
  name               = "${var.name}-instance"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "read_models" {
  count  = var.models_s3_uri == "" ? 0 : 1
  name   = "read-models"
  role   = aws_iam_role.rlchat[0].id
  policy = data.aws_iam_policy_document.read_models[0].json
}

resource "aws_iam_instance_profile" "rlchat" {
  count = var.models_s3_uri == "" ? 0 : 1
  name  = "${var.name}-instance"
  role  = aws_iam_role.rlchat[0].name
}

resource "aws_instance" "rlchat" {
  ami                         = var.ami_id == null ? data.aws_ami.debian[0].id : var.ami_id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.rlchat.id]
  associate_public_ip_address = true
  key_name                    = var.key_name
  iam_instance_profile        = var.models_s3_uri == "" ? null : aws_iam_instance_profile.rlchat[0].name

  # Gzipped: the files it carries come close to EC2's 16 KiB limit on user data as text.
  user_data_base64            = base64gzip(local.user_data)
  user_data_replace_on_change = true

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_gb
    encrypted   = true
  }

  # IMDSv2 only.
  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  tags = {
    Name = var.name
  }

  lifecycle {
    precondition {
      condition     = length(local.replica_ports) > 0
      error_message = "deploy/nginx/replicas.conf names no `server 127.0.0.1:PORT` replica."
    }
  }
}
